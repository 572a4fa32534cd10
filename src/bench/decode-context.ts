/**
 * What the decode benchmark attends over: one attention layer with random weights, a random but valid token
 * history (the "logical content": each token's latent c and un-rotated shared key kp), the three caches built
 * from that same content with the decode path's append-time math, and the float64 reference's attention output
 * (src/model/reference.ts) for the new token.
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
} from '../model/decode';
import type { RopeTables } from '../model/layers';
import { disposeParams, layerPrefix, paramInfos, type Params } from '../model/params';
import {
  referenceAttentionOutput,
  referenceKeys,
  referenceNormRotate,
  referenceProjections,
  referenceScores,
  type RefWeights,
} from '../model/reference';
import type { CacheKind, ModelSpec } from '../model/spec';

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

/** Tokens start..start+n-1 of sequence b as a one-sequence block: c [1, n, dc], kp [1, n, dr]. */
function blockTensors(content: LatentContent, s: ModelSpec, b: number, start: number, n: number): { c: tf.Tensor3D; kp: tf.Tensor3D } {
  return {
    c: tf.tensor3d(content.c[b].subarray(start * s.dc, (start + n) * s.dc), [1, n, s.dc]),
    kp: tf.tensor3d(content.kp[b].subarray(start * s.dr, (start + n) * s.dr), [1, n, s.dr]),
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
 * Build one cache kind from the content with the append-time math of src/model/decode.ts. The cache holds
 * `latent` (from `latentTensors`) by reference; the caller disposes it.
 */
export async function buildFixedCache(kind: CacheKind, l: BenchLayer, content: LatentContent, latent: tf.Tensor2D[], rope: RopeTables): Promise<FixedCache> {
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
          return fullKeyCacheRows(layer, c, kp, start, rope); // [1, H, n, dk]
        });
        for (let h = 0; h < s.H; h++) host[h].set(block.subarray(h * n * dk, (h + 1) * n * dk), start * dk);
      }
      keys.push(host.map((k) => tf.tensor2d(k, [S, dk])));
    }
    return { kind, keys, c: latent };
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
        return latentCacheRows(kind, layer, block.c, block.kp, start, rope); // [1, n, dr], [1, n, G]
      });
      kprHost.set(await stored.kpr.data(), start * s.dr);
      if (rkHost) rkHost.set(await stored.rk!.data(), start * s.G);
      tf.dispose([stored.kpr, stored.rk].filter((t): t is tf.Tensor3D => t !== undefined));
    }
    kpr.push(tf.tensor2d(kprHost, [S, s.dr]));
    if (rkHost) rk.push(tf.tensor2d(rkHost, [S, s.G]));
  }
  return kind === 'latent+invrms' ? { kind, c: latent, kpr, rk } : { kind, c: latent, kpr };
}

// ---------------------------------------------------------------------------------------------------------------
// The float64 reference (src/model/reference.ts: explicit per-head keys, §1 and §3), token by token over the drawn
// history. Only the content keys kn_h = W_UK^h c of each block come from a float32 matrix product (1e-7 relative):
// in float64 on the host they would cost H*dn*dc multiply-adds per token, minutes at 256k.

async function host(t: tf.Tensor): Promise<Float64Array> {
  return Float64Array.from(await t.data());
}

export type ReferenceVariant = 'plain' | 'qk-norm';

export function referenceVariantOf(kind: CacheKind): ReferenceVariant {
  return kind === 'latent' ? 'plain' : 'qk-norm';
}

/** The attention output [B*d] for the new token (position S-1) of every sequence, per variant, in float64. */
export async function referenceOutputs(l: BenchLayer, content: LatentContent, variants: ReferenceVariant[]): Promise<Map<ReferenceVariant, Float64Array>> {
  const s = l.spec;
  const a = ATTENTION_PREFIX;
  const B = content.c.length;
  const S = content.S;
  const specOf = (v: ReferenceVariant): ModelSpec => (v === 'plain' ? { ...s, variant: 'baseline' } : s);
  const W: RefWeights = {};
  for (const [name, t] of Object.entries(l.params)) W[name] = await host(t);
  const xs = await host(l.x);

  // W_UK^T [dc, H*dn] for the block products, assembled from the checkpoint layout by index.
  const wkvb = W[`${a}kv_b_proj.weight`]; // [H*(dn+dv), dc], per-head blocks [W_UK^h ; W_UV^h]
  const ukT = new Float32Array(s.dc * s.H * s.dn);
  for (let h = 0; h < s.H; h++)
    for (let i = 0; i < s.dn; i++) for (let k = 0; k < s.dc; k++) ukT[k * s.H * s.dn + h * s.dn + i] = wkvb[(h * (s.dn + s.dv) + i) * s.dc + k];
  const ukTensor = tf.tensor2d(ukT, [s.dc, s.H * s.dn]);

  const outputs = new Map<ReferenceVariant, Float64Array>(variants.map((v) => [v, new Float64Array(B * s.d)]));
  try {
    for (let b = 0; b < B; b++) {
      const { q } = referenceProjections(W, a, s, xs.subarray(b * s.d, (b + 1) * s.d));
      const queries = new Map(
        variants.map((v) => {
          const rows = q.map((r) => r.slice());
          referenceNormRotate(rows, W, a, specOf(v), 'q', S - 1);
          return [v, rows];
        }),
      );
      const scores = new Map(variants.map((v) => [v, Array.from({ length: s.H }, () => new Float64Array(S))]));
      for (let start = 0; start < S; start += FILL_BLOCK) {
        const n = Math.min(FILL_BLOCK, S - start);
        const kn = await read(() => tf.matMul(tf.tensor2d(content.c[b].subarray(start * s.dc, (start + n) * s.dc), [n, s.dc]), ukTensor)); // [n, H*dn]
        for (let t = 0; t < n; t++) {
          const j = start + t;
          for (const v of variants) {
            const keys = referenceKeys(s, kn.subarray(t * s.H * s.dn, (t + 1) * s.H * s.dn), content.kp[b].subarray(j * s.dr, (j + 1) * s.dr));
            referenceNormRotate(keys, W, a, specOf(v), 'k', j);
            const out = scores.get(v)!;
            referenceScores(s, queries.get(v)!, keys).forEach((score, h) => (out[h][j] = score));
          }
        }
      }
      const c = content.c[b];
      for (const v of variants) {
        outputs.get(v)!.set(referenceAttentionOutput(W, a, specOf(v), scores.get(v)!, (j) => c.subarray(j * s.dc, (j + 1) * s.dc)), b * s.d);
      }
    }
  } finally {
    ukTensor.dispose();
  }
  return outputs;
}
