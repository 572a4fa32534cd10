/**
 * One absorbed decode step of one attention layer against a preallocated, fixed-size cache (design note §2, §4),
 * arranged so that latent+invrms costs the plain latent step plus one read of its G inverse-RMS numbers per token.
 *
 * `attentionDecode` (attention.ts) is the readable reference: it grows the cache by concatenation and computes
 * the scores as `mul(add(content, positional), factor)` followed by `mul(raw, scale)`, so latent+invrms makes two
 * more passes over the [H, S] scores than latent does (one of them over a [B, G, 1, n, S] factor tensor). Here:
 *   - the per-query numbers (softmax scale, rq, the static QK-norm weights) go into the query, never the scores;
 *   - the only per-key factor, rk_g(j), multiplies the scores once, broadcast over the group's heads.
 * So latent: content and positional products, their sum, transpose, softmax, values product. latent+invrms: the
 * same and one broadcasted multiply, which reads G*S extra floats.
 *
 * Layout choices follow the wasm backend, whose matrix products take XNNPACK's fast path only without transposed
 * operands: weights are stored pre-transposed ([in, out]), the scores are computed as c · Q^T ([S, H], the long
 * dimension as the product's rows), and every sequence has its own cache tensors. Sequences are looped. Keeping c
 * and kpr apart (as LayerCacheState does) costs one add but lets the values product read only c: measured 5%
 * faster than one [S, dc+dr] block whose positional columns the values product would read for nothing.
 *
 * Shapes: B sequences, S cached tokens (the new token's own row, appended at O(1) cost, is the last one), H heads,
 * G key groups, dc latent, dn content head width, dr positional width, dv value head width.
 * Every function expects to run inside the caller's tf.tidy.
 */
import * as tf from '@tensorflow/tfjs';
import { rmsNorm } from './layers';
import type { Params } from './params';
import { attentionScale, type ModelSpec } from './spec';

/** One attention layer's weights, rearranged once for decoding. Owned: call `disposeDecodeLayer`. */
export interface DecodeLayer {
  spec: ModelSpec;
  /** x -> q, [d, H*(dn+dr)]; or with query compression the pair [d, dq], [dq, H*(dn+dr)] and its norm weight. */
  wQT?: tf.Tensor2D;
  wQAT?: tf.Tensor2D;
  qANorm?: tf.Tensor1D;
  wQBT?: tf.Tensor2D;
  /** x -> [a ; kp], [d, dc+dr], and the latent's RMSNorm weight [dc]: what an append computes for a new token. */
  wDKVT: tf.Tensor2D;
  kvNorm: tf.Tensor1D;
  /**
   * Per head W_UK^h [dn, dc] times the softmax scale: moves a content query into latent space, scaled. For qk-norm
   * its rows also carry the static weights gk_n ⊙ gq_n (§4 folds the key weight into the query side; the query
   * weight can go with it because rq is taken before either weight applies).
   */
  wUK: tf.Tensor2D[];
  /**
   * The softmax scale times, for qk-norm scope full, gq_p: what multiplies a positional query before RoPE, [dr],
   * and the same with the members of each pair exchanged (what the sine term needs). Kept as tensors, not host
   * arrays: reading gq_p back synchronously is impossible on webgpu in Node.
   */
  positionalQueryWeight: { w: tf.Tensor1D; swapped: tf.Tensor1D };
  /** Every head's W_UK^h^T side by side, [dc, H*dn]: explicit content keys of a block of tokens at append time. */
  wUKAllT: tf.Tensor2D;
  /** Per head W_UV^h^T [dc, dv]. */
  wUVT: tf.Tensor2D[];
  /** [H*dv, d] */
  wOT: tf.Tensor2D;
  /** QK-norm weights split into content and positional parts (positional parts only for scope `full`). */
  qkNorm?: { gqN: tf.Tensor1D; gqP?: tf.Tensor1D; gkN: tf.Tensor1D; gkP?: tf.Tensor1D };
}

/** scale ⊙ gq_p (qk-norm scope full) or scale alone, and its pair-swapped copy: see `interleavedAngles`. */
function positionalQueryWeight(s: ModelSpec, P: Params, pre: string, keep: <T extends tf.Tensor>(t: T) => T): DecodeLayer['positionalQueryWeight'] {
  const scale = attentionScale(s);
  const gqP = s.variant === 'qk-norm' && s.scope === 'full' ? P[`${pre}q_norm.weight`].slice([s.dn], [s.dr]) : undefined;
  const w = (gqP ? tf.mul(gqP, scale) : tf.fill([s.dr], scale)) as tf.Tensor1D;
  return { w: keep(w), swapped: keep(tf.reverse(w.reshape([s.dr / 2, 2]), 1).reshape([s.dr]) as tf.Tensor1D) };
}

/** Rearrange one layer's parameters (prefix such as `model.layers.0.self_attn.`) for `absorbedDecodeStep`. */
export function prepareDecodeLayer(P: Params, pre: string, s: ModelSpec): DecodeLayer {
  let prepared: DecodeLayer | undefined;
  // Intermediates (the split weight blocks) are freed by the tidy; what the layer holds is kept.
  tf.tidy(() => {
    const keep = <T extends tf.Tensor>(t: T): T => tf.keep(t);
    const w = P[`${pre}kv_b_proj.weight`].reshape([s.H, s.dn + s.dv, s.dc]); // per-head blocks [kn_h ; v_h]
    const [wUKAll, wUVAll] = tf.split(w, [s.dn, s.dv], 1) as tf.Tensor3D[]; // [H, dn, dc], [H, dv, dc]
    const layer: DecodeLayer = {
      spec: s,
      wDKVT: keep(P[`${pre}kv_a_proj_with_mqa.weight`].transpose() as tf.Tensor2D),
      kvNorm: keep(P[`${pre}kv_a_layernorm.weight`].clone() as tf.Tensor1D),
      wUK: [],
      positionalQueryWeight: positionalQueryWeight(s, P, pre, keep),
      wUKAllT: keep(wUKAll.reshape([s.H * s.dn, s.dc]).transpose() as tf.Tensor2D),
      wUVT: tf.unstack(wUVAll).map((t) => keep(t.transpose() as tf.Tensor2D)),
      wOT: keep(P[`${pre}o_proj.weight`].transpose() as tf.Tensor2D),
    };
    if (s.dq > 0) {
      layer.wQAT = keep(P[`${pre}q_a_proj.weight`].transpose() as tf.Tensor2D);
      layer.qANorm = keep(P[`${pre}q_a_layernorm.weight`].clone() as tf.Tensor1D);
      layer.wQBT = keep(P[`${pre}q_b_proj.weight`].transpose() as tf.Tensor2D);
    } else {
      layer.wQT = keep(P[`${pre}q_proj.weight`].transpose() as tf.Tensor2D);
    }
    if (s.variant === 'qk-norm') {
      const gq = P[`${pre}q_norm.weight`] as tf.Tensor1D;
      const gk = P[`${pre}k_norm.weight`] as tf.Tensor1D;
      const full = s.scope === 'full';
      const [gqN, gqP] = full ? (tf.split(gq, [s.dn, s.dr]) as tf.Tensor1D[]) : [gq.clone(), undefined];
      const [gkN, gkP] = full ? (tf.split(gk, [s.dn, s.dr]) as tf.Tensor1D[]) : [gk.clone(), undefined];
      layer.qkNorm = { gqN: keep(gqN), gqP: gqP && keep(gqP), gkN: keep(gkN), gkP: gkP && keep(gkP) };
    }
    const absorbing = layer.qkNorm ? tf.mul(wUKAll, tf.mul(layer.qkNorm.gkN, layer.qkNorm.gqN).reshape([1, s.dn, 1])) : wUKAll;
    layer.wUK = tf.unstack(tf.mul(absorbing, attentionScale(s))).map((t) => keep(t as tf.Tensor2D));
    prepared = layer;
  });
  return prepared!;
}

export function disposeDecodeLayer(l: DecodeLayer): void {
  const q = l.qkNorm;
  const pw = l.positionalQueryWeight;
  tf.dispose([l.wQT, l.wQAT, l.qANorm, l.wQBT, l.wDKVT, l.kvNorm, ...l.wUK, l.wUKAllT, ...l.wUVT, l.wOT, pw.w, pw.swapped].filter(Boolean) as tf.Tensor[]);
  if (q) tf.dispose([q.gqN, q.gqP, q.gkN, q.gkP].filter(Boolean) as tf.Tensor[]);
}

// ---------------------------------------------------------------------------------------------------------------
// Fixed-size caches

/** latent: c and kpr = RoPE_j(kp). latent+invrms: c, kpr = RoPE_j(gk_p ⊙ kp) (scope full) and rk. */
export interface LatentFixedCache {
  kind: 'latent' | 'latent+invrms';
  /** Per sequence [S, dc] */
  c: tf.Tensor2D[];
  /** Per sequence [S, dr] */
  kpr: tf.Tensor2D[];
  /** Per sequence [S, G]: token-major, like the [S, H] scores it scales. latent+invrms only. */
  rk?: tf.Tensor2D[];
}

/** Explicit keys: normalised (qk-norm) and rotated, per sequence and head, plus the latent for the values. */
export interface FullKeyFixedCache {
  kind: 'full-key';
  /** [sequence][head] -> [S, dn+dr] */
  keys: tf.Tensor2D[][];
  /** Per sequence [S, dc] */
  latent: tf.Tensor2D[];
}

export type FixedCache = LatentFixedCache | FullKeyFixedCache;

export function fixedCacheLength(cache: FixedCache): number {
  return cache.kind === 'full-key' ? cache.latent[0].shape[0] : cache.c[0].shape[0];
}

export function fixedCacheTensors(cache: FixedCache): tf.Tensor[] {
  return cache.kind === 'full-key' ? [...cache.keys.flat(), ...cache.latent] : [...cache.c, ...cache.kpr, ...(cache.rk ?? [])];
}

export function disposeFixedCache(cache: FixedCache): void {
  tf.dispose(fixedCacheTensors(cache));
}

// ---------------------------------------------------------------------------------------------------------------
// RoPE on adjacent pairs (2i, 2i+1), frequency theta^(-2i/dr), the layout of RopeTables (layers.ts). RopeTables.apply
// separates the pair members with a split along a last axis of size 2, which the wasm backend copies one number at
// a time (about 0.25 us each: milliseconds per step, seconds per long prefill). Here the pair swap is one product
// with a fixed signed permutation, and cos/sin come from the host, computed in float64 and rounded once.

/**
 * cos and sin at positions start..start+n-1, each value repeated for both members of its pair: [n, dr] each.
 * With `weight`, the tables also apply an elementwise weight w [dr] before the rotation, for two [n, dr] products
 * instead of a pass over z: rotate(z ⊙ w) = z ⊙ (w ⊙ cos) + swap(z) ⊙ (w' ⊙ sin), where w' (`swapped`) exchanges
 * the members of each pair of w.
 */
function interleavedAngles(dr: number, theta: number, start: number, n: number, weight?: { w: tf.Tensor1D; swapped: tf.Tensor1D }): { cos: tf.Tensor2D; sin: tf.Tensor2D } {
  const cos = new Float32Array(n * dr);
  const sin = new Float32Array(n * dr);
  for (let t = 0; t < n; t++) {
    for (let i = 0; i < dr / 2; i++) {
      const angle = (start + t) * Math.pow(theta, (-2 * i) / dr);
      cos[t * dr + 2 * i] = cos[t * dr + 2 * i + 1] = Math.cos(angle);
      sin[t * dr + 2 * i] = sin[t * dr + 2 * i + 1] = Math.sin(angle);
    }
  }
  const tables = { cos: tf.tensor2d(cos, [n, dr]), sin: tf.tensor2d(sin, [n, dr]) };
  return weight ? { cos: tf.mul(tables.cos, weight.w), sin: tf.mul(tables.sin, weight.swapped) } : tables;
}

/** z · M maps each pair (x0, x1) to (-x1, x0). [dr, dr] */
function pairSwap(dr: number): tf.Tensor2D {
  const m = new Float32Array(dr * dr);
  for (let i = 0; i < dr / 2; i++) {
    m[(2 * i + 1) * dr + 2 * i] = -1;
    m[2 * i * dr + 2 * i + 1] = 1;
  }
  return tf.tensor2d(m, [dr, dr]);
}

/**
 * Rotate z [..., n, dr] whose rows sit at positions start..start+n-1 (leading axes share the positions), after
 * multiplying by `weight` [dr] if given.
 */
export function rotatePairs(z: tf.Tensor, start: number, theta: number, weight?: { w: tf.Tensor1D; swapped: tf.Tensor1D }): tf.Tensor {
  const dr = z.shape[z.rank - 1];
  const n = z.shape[z.rank - 2];
  const { cos, sin } = interleavedAngles(dr, theta, start, n, weight); // broadcast over the leading axes
  const swapped = tf.matMul(z.reshape([-1, dr]) as tf.Tensor2D, pairSwap(dr)).reshape(z.shape);
  return tf.add(tf.mul(z, cos), tf.mul(swapped, sin));
}

// ---------------------------------------------------------------------------------------------------------------
// Append-time math: what a cache stores for a block of n tokens of one sequence at positions start..start+n-1.

/** The latent of new tokens: [a ; kp] = W_DKV x, c = RMSNorm_kv(a). x [n, d] -> c [n, dc], kp [n, dr]. */
export function latentOf(l: DecodeLayer, x: tf.Tensor2D): { c: tf.Tensor2D; kp: tf.Tensor2D } {
  const s = l.spec;
  const [a, kp] = tf.split(tf.matMul(x, l.wDKVT), [s.dc, s.dr], -1) as tf.Tensor2D[];
  return { c: rmsNorm(a, l.kvNorm, s.normEps) as tf.Tensor2D, kp };
}

/** 1/RMS per token and key group of per-head rows z [n, H, w] -> [n, G]. */
function groupInvRmsRows(z: tf.Tensor3D, s: ModelSpec): tf.Tensor2D {
  const [n, H, w] = z.shape;
  const grouped = z.reshape([n, s.G, (H / s.G) * w]);
  return tf.rsqrt(tf.add(tf.mean(tf.square(grouped), -1), s.qkEps)) as tf.Tensor2D;
}

/** Explicit un-normalised, un-rotated keys k_h = [W_UK^h c ; kp] of a block: [n, H, dn+dr]. */
function explicitKeys(l: DecodeLayer, c: tf.Tensor2D, kp: tf.Tensor2D): { kn: tf.Tensor3D; k: tf.Tensor3D } {
  const s = l.spec;
  const n = c.shape[0];
  const kn = tf.matMul(c, l.wUKAllT).reshape([n, s.H, s.dn]) as tf.Tensor3D;
  const kpHeads = tf.broadcastTo(kp.reshape([n, 1, s.dr]), [n, s.H, s.dr]);
  return { kn, k: tf.concat([kn, kpHeads], -1) as tf.Tensor3D };
}

/**
 * What a latent-kind cache stores for a block: the rotated shared key, and for latent+invrms the inverse key RMS.
 * Its full keys exist only here, long enough to give one number per group (§4); the positional key carries the
 * static weight gk_p for scope `full`. The latent c itself is stored as it is.
 */
export function latentCacheRows(
  kind: 'latent' | 'latent+invrms',
  l: DecodeLayer,
  c: tf.Tensor2D,
  kp: tf.Tensor2D,
  start: number,
): { kpr: tf.Tensor2D; rk?: tf.Tensor2D } {
  const s = l.spec;
  if (kind === 'latent') {
    if (s.variant === 'qk-norm') throw new Error('the plain latent cache cannot apply QK-norm; use latent+invrms');
    return { kpr: rotatePairs(kp, start, s.ropeTheta) as tf.Tensor2D };
  }
  if (!l.qkNorm) throw new Error('the latent+invrms cache is for the qk-norm variant');
  const full = s.scope === 'full';
  const { kn, k } = explicitKeys(l, c, kp);
  const rk = groupInvRmsRows(full ? k : kn, s);
  return { kpr: rotatePairs(full ? tf.mul(kp, l.qkNorm.gkP!) : kp, start, s.ropeTheta) as tf.Tensor2D, rk };
}

/** Per-head keys of a full-key cache, normalised as in §3 (qk-norm) and rotated: [H, n, dn+dr]. */
export function fullKeyCacheRows(l: DecodeLayer, c: tf.Tensor2D, kp: tf.Tensor2D, start: number): tf.Tensor3D {
  const s = l.spec;
  const { kn, k } = explicitKeys(l, c, kp);
  let keys = k;
  if (l.qkNorm) {
    const n = c.shape[0];
    const perHead = (r: tf.Tensor2D) => tf.broadcastTo(r.reshape([n, s.G, 1, 1]), [n, s.G, s.H / s.G, 1]).reshape([n, s.H, 1]);
    if (s.scope === 'full') {
      const gk = tf.concat([l.qkNorm.gkN, l.qkNorm.gkP!]);
      keys = tf.mul(tf.mul(k, perHead(groupInvRmsRows(k, s))), gk) as tf.Tensor3D;
    } else {
      const knNormed = tf.mul(tf.mul(kn, perHead(groupInvRmsRows(kn, s))), l.qkNorm.gkN);
      keys = tf.concat([knNormed, tf.slice(k, [0, 0, s.dn], [-1, -1, s.dr])], -1) as tf.Tensor3D;
    }
  }
  const [content, positional] = tf.split(keys.transpose([1, 0, 2]), [s.dn, s.dr], -1); // [H, n, dn], [H, n, dr]
  return tf.concat([content, rotatePairs(positional, start, s.ropeTheta)], -1) as tf.Tensor3D;
}

// ---------------------------------------------------------------------------------------------------------------
// The step

/** q_h = [qn_h ; qp_h] of B new tokens. x [B, d] -> [B, H, dn+dr]. */
function projectQuery(l: DecodeLayer, x: tf.Tensor2D): tf.Tensor3D {
  const s = l.spec;
  const q = l.wQT ? tf.matMul(x, l.wQT) : tf.matMul(rmsNorm(tf.matMul(x, l.wQAT!), l.qANorm!, s.normEps) as tf.Tensor2D, l.wQBT!);
  return q.reshape([x.shape[0], s.H, s.dn + s.dr]) as tf.Tensor3D;
}

/** qa_h = W_UK^h^T qn_h, one small product per head. [B, H, dn] -> [B, H, dc]. */
function absorbQueries(l: DecodeLayer, qn: tf.Tensor3D): tf.Tensor3D {
  const perHead = tf.unstack(qn, 1) as tf.Tensor2D[]; // H x [B, dn]
  return tf.stack(perHead.map((qh, h) => tf.matMul(qh, l.wUK[h])), 1) as tf.Tensor3D;
}

/** Rotate B new tokens' positional rows [B, H, dr], all at position pos, after multiplying by `weight` [dr]. */
function rotateAt(z: tf.Tensor3D, pos: number, theta: number, weight?: { w: tf.Tensor1D; swapped: tf.Tensor1D }): tf.Tensor3D {
  const [B, H, dr] = z.shape;
  return rotatePairs(z.reshape([B * H, 1, dr]), pos, theta, weight).reshape([B, H, dr]) as tf.Tensor3D;
}

/**
 * Each head's rows z [B, H, w] divided by the RMS of its key group's rows (§3's statistic, here for the query):
 * with one group per head a keep-dims mean over the last axis; otherwise over the group's heads and features.
 */
function normalizeByGroup(z: tf.Tensor3D, s: ModelSpec): tf.Tensor3D {
  const [B, H] = z.shape;
  const grouped = s.G === H ? z : z.reshape([B, s.G, 1, -1]); // [B, G, 1, hpg*w]
  const inv = tf.rsqrt(tf.add(tf.mean(tf.square(grouped), -1, true), s.qkEps));
  return (s.G === H ? tf.mul(z, inv) : tf.mul(z.reshape([B, s.G, H / s.G, -1]), inv).reshape(z.shape)) as tf.Tensor3D;
}

/** u [B, H, dc] -> W_O concat_h(W_UV^h u_h): [B, d]. */
function outputOf(l: DecodeLayer, u: tf.Tensor3D): tf.Tensor2D {
  const perHead = tf.unstack(u, 1) as tf.Tensor2D[]; // H x [B, dc]
  const o = tf.concat(perHead.map((uh, h) => tf.matMul(uh, l.wUVT[h])), -1) as tf.Tensor2D; // [B, H*dv]
  return tf.matMul(o, l.wOT);
}

/**
 * One decode step: B new tokens x [B, d], one per sequence, whose own rows are already the cache's last rows
 * (position S-1). Returns the attention output [B, d]. The cache kind must serve the layer's variant.
 */
export function absorbedDecodeStep(l: DecodeLayer, x: tf.Tensor2D, cache: FixedCache): tf.Tensor2D {
  const s = l.spec;
  const B = x.shape[0];
  const S = fixedCacheLength(cache);
  const pos = S - 1;
  const scale = attentionScale(s);
  const q = projectQuery(l, x); // [B, H, dn+dr]

  if (cache.kind === 'full-key') return outputOf(l, fullKeyAttend(l, q, cache, pos, scale));
  if (cache.kind === 'latent' && l.qkNorm) throw new Error('the plain latent cache cannot apply QK-norm; use latent+invrms');
  if (cache.kind === 'latent+invrms' && !l.qkNorm) throw new Error('the latent+invrms cache is for the qk-norm variant');
  if (cache.c.length !== B) throw new Error(`decode step: ${B} new tokens for a cache of ${cache.c.length} sequences`);

  // Per-query factors go into the query, so no pass over [H, S] applies them: the softmax scale and the static
  // QK-norm weights are already in wUK and in the rotation tables; rq multiplies the query itself (its content
  // slice only for scope nope), taken before any weight as explicit QK-norm does.
  const invrms = cache.kind === 'latent+invrms';
  const full = s.scope === 'full';
  let [qn, qp] = tf.split(invrms && full ? normalizeByGroup(q, s) : q, [s.dn, s.dr], -1) as tf.Tensor3D[];
  if (invrms && !full) qn = normalizeByGroup(qn, s);
  const qa = absorbQueries(l, qn); // [B, H, dc]
  const qpr = rotateAt(qp, pos, s.ropeTheta, l.positionalQueryWeight); // [B, H, dr]
  const scaleContentOnly = invrms && !full;
  const hpg = s.H / s.G;

  const us: tf.Tensor2D[] = [];
  for (let b = 0; b < B; b++) {
    const qaT = qa.slice([b, 0, 0], [1, -1, -1]).reshape([s.H, s.dc]).transpose() as tf.Tensor2D; // [dc, H]
    const qprT = qpr.slice([b, 0, 0], [1, -1, -1]).reshape([s.H, s.dr]).transpose() as tf.Tensor2D; // [dr, H]
    const content = tf.matMul(cache.c[b], qaT); // [S, H]
    const positional = tf.matMul(cache.kpr[b], qprT); // [S, H]
    let scoresT: tf.Tensor2D; // [S, H]
    if (!invrms) {
      scoresT = tf.add(content, positional);
    } else {
      // The one pass latent does not make: rk_g(j) on the scores of group g's heads (on the content term only for
      // scope nope, where the positional slices are not normalised).
      const rk = cache.rk![b];
      const byGroup = (z: tf.Tensor) => (hpg === 1 ? z : z.reshape([S, s.G, hpg]));
      const rkByGroup = hpg === 1 ? rk : rk.reshape([S, s.G, 1]);
      const scaled = scaleContentOnly
        ? tf.add(tf.mul(byGroup(content), rkByGroup), byGroup(positional))
        : tf.mul(byGroup(tf.add(content, positional)), rkByGroup);
      scoresT = (hpg === 1 ? scaled : scaled.reshape([S, s.H])) as tf.Tensor2D;
    }
    const p = tf.softmax(scoresT.transpose()); // [H, S]
    us.push(tf.matMul(p, cache.c[b])); // [H, dc]
  }
  return outputOf(l, tf.stack(us) as tf.Tensor3D);
}

/** Full-key scores: one product per head against its own keys; the latent gives the values. Returns u [B, H, dc]. */
function fullKeyAttend(l: DecodeLayer, q: tf.Tensor3D, cache: FullKeyFixedCache, pos: number, scale: number): tf.Tensor3D {
  const s = l.spec;
  const B = q.shape[0];
  if (cache.keys.length !== B) throw new Error(`decode step: ${B} new tokens for a cache of ${cache.keys.length} sequences`);
  let normed = q;
  if (l.qkNorm) {
    const g = l.qkNorm;
    if (s.scope === 'full') {
      normed = tf.mul(normalizeByGroup(q, s), tf.concat([g.gqN, g.gqP!])) as tf.Tensor3D;
    } else {
      const [qn, qp] = tf.split(q, [s.dn, s.dr], -1) as tf.Tensor3D[];
      normed = tf.concat([tf.mul(normalizeByGroup(qn, s), g.gqN), qp], -1) as tf.Tensor3D;
    }
  }
  const [content, positional] = tf.split(normed, [s.dn, s.dr], -1) as tf.Tensor3D[];
  const query = tf.mul(tf.concat([content, rotateAt(positional, pos, s.ropeTheta)], -1), scale) as tf.Tensor3D; // [B, H, dn+dr]
  const us: tf.Tensor2D[] = [];
  for (let b = 0; b < B; b++) {
    const perHead = tf.unstack(query.slice([b, 0, 0], [1, -1, -1]).reshape([s.H, s.dn + s.dr])) as tf.Tensor1D[];
    const S = cache.keys[b][0].shape[0];
    const scores = tf.concat(perHead.map((qh, h) => tf.matMul(cache.keys[b][h], qh.reshape([-1, 1])).reshape([1, S])), 0) as tf.Tensor2D; // [H, S]
    us.push(tf.matMul(tf.softmax(scores), cache.latent[b])); // [H, dc]
  }
  return tf.stack(us) as tf.Tensor3D;
}
