/**
 * What the decode benchmark attends over: one attention layer with random weights, a random but valid token
 * history (the "logical content": each token's latent c and un-rotated shared key kp), the three caches built
 * from that same content, and an independent float64 reference of the attention output for the new token.
 */
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../data/rng';
import {
  disposeDecodeLayer,
  fullKeyCacheRows,
  latentCacheRows,
  latentOf,
  prepareDecodeLayer,
  type DecodeLayer,
  type FixedCache,
} from '../model/decode-step';
import { disposeParams, layerPrefix, paramInfos, type Params } from '../model/params';
import { attentionScale, type CacheKind, type ModelSpec } from '../model/spec';

export const ATTENTION_PREFIX = `${layerPrefix(0)}self_attn.`;

/** Tokens per block when caches and the reference are filled: bounds the temporaries (explicit keys) to a few MB. */
export const FILL_BLOCK = 2048;

/**
 * One attention layer served two ways: `plain` (the model without QK-norm, for the latent cache) and `normed`
 * (the qk-norm variant, for latent+invrms and full-key). Both share the same weights, so the caches differ only
 * in what QK-norm adds.
 */
export interface BenchLayer {
  spec: ModelSpec; // qk-norm variant
  params: Params;
  plain: DecodeLayer;
  normed: DecodeLayer;
  /** The new token's hidden state for each sequence [B, d]. */
  x: tf.Tensor2D;
  dispose(): void;
}

/**
 * Values of the tensor `make` builds (its intermediates freed), read asynchronously: webgpu in Node cannot read
 * back synchronously, and the other backends lose nothing by waiting.
 */
async function read(make: () => tf.Tensor): Promise<Float32Array> {
  const t = tf.tidy(make);
  try {
    return (await t.data()) as Float32Array;
  } finally {
    t.dispose();
  }
}

export function layerFor(l: BenchLayer, kind: CacheKind): DecodeLayer {
  return kind === 'latent' ? l.plain : l.normed;
}

/**
 * Random weights at unit gain (std 1/sqrt(fan-in)), so queries, keys and scores are O(1) as in a trained model,
 * and norm weights uniform in [0.5, 1.5], so a folded or misplaced weight changes the output.
 */
export function makeBenchLayer(dims: ModelSpec, batch: number, seed: number): BenchLayer {
  const spec: ModelSpec = { ...dims, variant: 'qk-norm', L: 1 };
  const params: Params = {};
  paramInfos(spec)
    .filter((p) => p.name.startsWith(ATTENTION_PREFIX))
    .forEach((p, i) => {
      const s = seed * 7919 + i * 104729 + 1;
      params[p.name] = tf.tidy(() =>
        p.shape.length === 1 ? tf.randomUniform(p.shape, 0.5, 1.5, 'float32', s) : tf.randomNormal(p.shape, 0, 1 / Math.sqrt(p.shape[1]), 'float32', s),
      );
    });
  const plain = prepareDecodeLayer(params, ATTENTION_PREFIX, { ...spec, variant: 'baseline' });
  const normed = prepareDecodeLayer(params, ATTENTION_PREFIX, spec);
  const x = tf.randomNormal([batch, spec.d], 0, 1, 'float32', seed * 31 + 7) as tf.Tensor2D;
  return {
    spec,
    params,
    plain,
    normed,
    x,
    dispose: () => {
      disposeDecodeLayer(plain);
      disposeDecodeLayer(normed);
      disposeParams(params);
      x.dispose();
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// The logical content

/** Per sequence: c [S*dc] and kp [S*dr], row-major. Row S-1 is the new token's own row. */
export interface LatentContent {
  S: number;
  c: Float32Array[];
  kp: Float32Array[];
}

function fillStandardNormal(out: Float32Array, rng: Rng): void {
  // Box-Muller: two normals per pair of uniforms; 1 - u keeps the logarithm's argument in (0, 1].
  for (let i = 0; i < out.length; i += 2) {
    const radius = Math.sqrt(-2 * Math.log(1 - rng.nextFloat()));
    const angle = 2 * Math.PI * rng.nextFloat();
    out[i] = radius * Math.cos(angle);
    if (i + 1 < out.length) out[i + 1] = radius * Math.sin(angle);
  }
}

/**
 * S tokens per sequence: the first S-1 drawn like a real latent (a ~ N(0, 1), then c = RMSNorm_kv(a) with the
 * layer's norm weight; kp ~ N(0, 1)), the last computed from the new token x as an append would.
 */
export async function drawContent(l: BenchLayer, S: number, seed: number): Promise<LatentContent> {
  const s = l.spec;
  const B = l.x.shape[0];
  const gain = await l.normed.kvNorm.data();
  const latest = tf.tidy(() => latentOf(l.normed, l.x)); // the new token's own c and kp
  const fresh = [await latest.c.data(), await latest.kp.data()] as Float32Array[];
  tf.dispose([latest.c, latest.kp]);
  const content: LatentContent = { S, c: [], kp: [] };
  for (let b = 0; b < B; b++) {
    const rng = Rng.fromSeed(seed, S, b);
    const c = new Float32Array(S * s.dc);
    const kp = new Float32Array(S * s.dr);
    fillStandardNormal(c, rng);
    fillStandardNormal(kp, rng);
    for (let j = 0; j < S - 1; j++) {
      const row = c.subarray(j * s.dc, (j + 1) * s.dc);
      let sumSq = 0;
      for (let i = 0; i < s.dc; i++) sumSq += row[i] * row[i];
      const inv = 1 / Math.sqrt(sumSq / s.dc + s.normEps);
      for (let i = 0; i < s.dc; i++) row[i] = row[i] * inv * gain[i];
    }
    c.set(fresh[0].subarray(b * s.dc, (b + 1) * s.dc), (S - 1) * s.dc);
    kp.set(fresh[1].subarray(b * s.dr, (b + 1) * s.dr), (S - 1) * s.dr);
    content.c.push(c);
    content.kp.push(kp);
  }
  return content;
}

// ---------------------------------------------------------------------------------------------------------------
// Caches: filled block by block on the host, then uploaded once, so the timed step sees one tensor per sequence.

function blockTensors(content: LatentContent, s: ModelSpec, b: number, start: number, n: number): { c: tf.Tensor2D; kp: tf.Tensor2D } {
  return {
    c: tf.tensor2d(content.c[b].subarray(start * s.dc, (start + n) * s.dc), [n, s.dc]),
    kp: tf.tensor2d(content.kp[b].subarray(start * s.dr, (start + n) * s.dr), [n, s.dr]),
  };
}

/**
 * The latent c of every sequence as backend tensors [S, dc], made once per context and shared by all caches: every
 * kind stores the very same numbers (§4 leaves the cached latent untouched), and one shared tensor means their
 * steps read the same memory, so where the allocator happened to put each copy cannot tilt the comparison.
 */
export function latentTensors(content: LatentContent, s: ModelSpec): tf.Tensor2D[] {
  return content.c.map((c) => tf.tensor2d(c, [content.S, s.dc]));
}

/**
 * Build one cache kind from the content with the append-time math of src/model/decode-step.ts. The cache holds
 * `latent` (from `latentTensors`) by reference; the caller disposes it.
 */
export async function buildFixedCache(kind: CacheKind, l: BenchLayer, content: LatentContent, latent: tf.Tensor2D[]): Promise<FixedCache> {
  const layer = layerFor(l, kind);
  const s = l.spec;
  const S = content.S;
  const B = content.c.length;
  if (kind === 'full-key') {
    const dk = s.dn + s.dr;
    const keys: tf.Tensor2D[][] = [];
    for (let b = 0; b < B; b++) {
      const host = Array.from({ length: s.H }, () => new Float32Array(S * dk));
      for (let start = 0; start < S; start += FILL_BLOCK) {
        const n = Math.min(FILL_BLOCK, S - start);
        const block = await read(() => {
          const { c, kp } = blockTensors(content, s, b, start, n);
          return fullKeyCacheRows(layer, c, kp, start); // [H, n, dk]
        });
        for (let h = 0; h < s.H; h++) host[h].set(block.subarray(h * n * dk, (h + 1) * n * dk), start * dk);
      }
      keys.push(host.map((k) => tf.tensor2d(k, [S, dk])));
    }
    return { kind, keys, latent };
  }
  const kpr: tf.Tensor2D[] = [];
  const rk: tf.Tensor2D[] = [];
  for (let b = 0; b < B; b++) {
    const kprHost = new Float32Array(S * s.dr);
    const rkHost = kind === 'latent+invrms' ? new Float32Array(S * s.G) : undefined;
    for (let start = 0; start < S; start += FILL_BLOCK) {
      const n = Math.min(FILL_BLOCK, S - start);
      const stored = tf.tidy(() => {
        const block = blockTensors(content, s, b, start, n);
        return latentCacheRows(kind, layer, block.c, block.kp, start);
      });
      kprHost.set(await stored.kpr.data(), start * s.dr);
      if (rkHost) rkHost.set(await stored.rk!.data(), start * s.G);
      tf.dispose([stored.kpr, stored.rk].filter((t): t is tf.Tensor2D => t !== undefined));
    }
    kpr.push(tf.tensor2d(kprHost, [S, s.dr]));
    if (rkHost) rk.push(tf.tensor2d(rkHost, [S, s.G]));
  }
  return kind === 'latent+invrms' ? { kind, c: latent, kpr, rk } : { kind, c: latent, kpr };
}

// ---------------------------------------------------------------------------------------------------------------
// Independent reference: the training form's explicit keys (§1, §3), evaluated per token in float64 on the host.
// Only the content keys kn_h = W_UK^h c of each block come from a float32 matrix product (1e-7 relative).

type Vec = Float64Array;

async function host(t: tf.Tensor): Promise<Vec> {
  return Float64Array.from(await t.data());
}

function matVec(w: Vec, rows: number, cols: number, x: ArrayLike<number>): Vec {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let c = 0; c < cols; c++) acc += w[r * cols + c] * x[c];
    y[r] = acc;
  }
  return y;
}

/** cos and sin of RoPE's angles at position t for pairs i = 0..dr/2-1 (frequency theta^(-2i/dr)). */
function ropeAngles(t: number, dr: number, theta: number): { cos: Vec; sin: Vec } {
  const cos = new Float64Array(dr / 2);
  const sin = new Float64Array(dr / 2);
  for (let i = 0; i < dr / 2; i++) {
    const a = t * Math.pow(theta, (-2 * i) / dr);
    cos[i] = Math.cos(a);
    sin[i] = Math.sin(a);
  }
  return { cos, sin };
}

/** Rotate the adjacent pairs of z[off .. off+dr) in place. */
function rotateInPlace(z: Vec, off: number, angles: { cos: Vec; sin: Vec }): void {
  for (let i = 0; i < angles.cos.length; i++) {
    const x0 = z[off + 2 * i];
    const x1 = z[off + 2 * i + 1];
    z[off + 2 * i] = x0 * angles.cos[i] - x1 * angles.sin[i];
    z[off + 2 * i + 1] = x0 * angles.sin[i] + x1 * angles.cos[i];
  }
}

/**
 * Normalise per-head rows z [H*(dn+dr)] group by group (§3): over whole heads for scope full, over the content
 * slices only for scope nope; then multiply by the norm weight g. In place.
 */
function qkNormInPlace(z: Vec, s: ModelSpec, g: Vec): void {
  const dk = s.dn + s.dr;
  const hpg = s.H / s.G;
  const width = s.scope === 'full' ? dk : s.dn;
  for (let grp = 0; grp < s.G; grp++) {
    let sumSq = 0;
    for (let h = grp * hpg; h < (grp + 1) * hpg; h++) for (let i = 0; i < width; i++) sumSq += z[h * dk + i] ** 2;
    const inv = 1 / Math.sqrt(sumSq / (hpg * width) + s.qkEps);
    for (let h = grp * hpg; h < (grp + 1) * hpg; h++) for (let i = 0; i < width; i++) z[h * dk + i] *= inv * g[i];
  }
}

export type ReferenceVariant = 'plain' | 'qk-norm';

export function referenceVariantOf(kind: CacheKind): ReferenceVariant {
  return kind === 'latent' ? 'plain' : 'qk-norm';
}

/** The attention output [B*d] for the new token (position S-1) of every sequence, per variant, in float64. */
export async function referenceOutputs(l: BenchLayer, content: LatentContent, variants: ReferenceVariant[]): Promise<Map<ReferenceVariant, Vec>> {
  const s = l.spec;
  const P = l.params;
  const pre = ATTENTION_PREFIX;
  const B = content.c.length;
  const S = content.S;
  const dk = s.dn + s.dr;
  const scale = attentionScale(s);
  const xs = await host(l.x);
  const wkvb = await host(P[`${pre}kv_b_proj.weight`]); // [H*(dn+dv), dc], per-head blocks [W_UK^h ; W_UV^h]
  const wo = await host(P[`${pre}o_proj.weight`]); // [d, H*dv]
  const gq = await host(P[`${pre}q_norm.weight`]);
  const gk = await host(P[`${pre}k_norm.weight`]);

  // W_UK^T [dc, H*dn] for the block products, assembled from the checkpoint layout by index.
  const ukT = new Float32Array(s.dc * s.H * s.dn);
  for (let h = 0; h < s.H; h++)
    for (let i = 0; i < s.dn; i++) for (let k = 0; k < s.dc; k++) ukT[k * s.H * s.dn + h * s.dn + i] = wkvb[(h * (s.dn + s.dv) + i) * s.dc + k];
  const ukTensor = tf.tensor2d(ukT, [s.dc, s.H * s.dn]);

  const outputs = new Map<ReferenceVariant, Vec>(variants.map((v) => [v, new Float64Array(B * s.d)]));
  try {
    for (let b = 0; b < B; b++) {
      const x = xs.subarray(b * s.d, (b + 1) * s.d);
      let q: Vec;
      if (s.dq > 0) {
        const qa = matVec(await host(P[`${pre}q_a_proj.weight`]), s.dq, s.d, x);
        let sumSq = 0;
        for (const v of qa) sumSq += v * v;
        const inv = 1 / Math.sqrt(sumSq / s.dq + s.normEps);
        const w = await host(P[`${pre}q_a_layernorm.weight`]);
        q = matVec(await host(P[`${pre}q_b_proj.weight`]), s.H * dk, s.dq, qa.map((v, i) => v * inv * w[i]));
      } else {
        q = matVec(await host(P[`${pre}q_proj.weight`]), s.H * dk, s.d, x);
      }
      const queries = new Map<ReferenceVariant, Vec>();
      const queryAngles = ropeAngles(S - 1, s.dr, s.ropeTheta);
      for (const v of variants) {
        const qv = q.slice();
        if (v === 'qk-norm') qkNormInPlace(qv, s, gq);
        for (let h = 0; h < s.H; h++) rotateInPlace(qv, h * dk + s.dn, queryAngles);
        queries.set(v, qv);
      }

      // Scores of every head against every cached token, from explicit keys.
      const scores = new Map<ReferenceVariant, Vec>(variants.map((v) => [v, new Float64Array(s.H * S)]));
      const key = new Float64Array(s.H * dk);
      for (let start = 0; start < S; start += FILL_BLOCK) {
        const n = Math.min(FILL_BLOCK, S - start);
        const kn = await read(() => tf.matMul(tf.tensor2d(content.c[b].subarray(start * s.dc, (start + n) * s.dc), [n, s.dc]), ukTensor));
        for (let t = 0; t < n; t++) {
          const j = start + t;
          const angles = ropeAngles(j, s.dr, s.ropeTheta);
          for (const v of variants) {
            for (let h = 0; h < s.H; h++) {
              for (let i = 0; i < s.dn; i++) key[h * dk + i] = kn[t * s.H * s.dn + h * s.dn + i];
              for (let i = 0; i < s.dr; i++) key[h * dk + s.dn + i] = content.kp[b][j * s.dr + i];
            }
            if (v === 'qk-norm') qkNormInPlace(key, s, gk);
            const qv = queries.get(v)!;
            const out = scores.get(v)!;
            for (let h = 0; h < s.H; h++) {
              rotateInPlace(key, h * dk + s.dn, angles);
              let dot = 0;
              for (let i = 0; i < dk; i++) dot += qv[h * dk + i] * key[h * dk + i];
              out[h * S + j] = scale * dot;
            }
          }
        }
      }

      // Softmax, values through the latent, W_UV and W_O.
      const c = content.c[b];
      for (const v of variants) {
        const sc = scores.get(v)!;
        const u = new Float64Array(s.H * s.dc);
        for (let h = 0; h < s.H; h++) {
          let max = -Infinity;
          for (let j = 0; j < S; j++) max = Math.max(max, sc[h * S + j]);
          let z = 0;
          for (let j = 0; j < S; j++) z += Math.exp(sc[h * S + j] - max);
          for (let j = 0; j < S; j++) {
            const p = Math.exp(sc[h * S + j] - max) / z;
            for (let k = 0; k < s.dc; k++) u[h * s.dc + k] += p * c[j * s.dc + k];
          }
        }
        const o = new Float64Array(s.H * s.dv);
        for (let h = 0; h < s.H; h++)
          for (let i = 0; i < s.dv; i++) {
            let acc = 0;
            const row = (h * (s.dn + s.dv) + s.dn + i) * s.dc;
            for (let k = 0; k < s.dc; k++) acc += wkvb[row + k] * u[h * s.dc + k];
            o[h * s.dv + i] = acc;
          }
        outputs.get(v)!.set(matVec(wo, s.d, s.H * s.dv, o), b * s.d);
      }
    }
  } finally {
    ukTensor.dispose();
  }
  return outputs;
}
