/**
 * Multi-head Latent Attention: the training form for the three variants, and the three decode forms.
 * The math is `shared/design/mla-math.md`; section numbers below refer to it.
 *
 * Shapes: B batch, n new tokens (the whole sequence in training), S cached tokens, H heads, G key groups,
 * dc latent, dn content (nope) head width, dr shared positional (rope) width, dv value head width.
 * All functions expect to run inside the caller's tf.tidy.
 */
import * as tf from '@tensorflow/tfjs';
import { causalMask, linear, matmul, rmsNorm, RopeTables } from './layers';
import type { Params } from './params';
import type { ModelSpec } from './spec';
import { attentionScale } from './spec';

export interface AttentionResult {
  out: tf.Tensor; // [B, n, d]
  /** S_h: max over batch and unmasked (t, j) of the scaled pre-softmax logit, per head. [H] */
  maxLogit?: tf.Tensor1D;
}

// ---------------------------------------------------------------------------------------------------------------
// Projections shared by every form (§1)

/** q_h = [qn_h ; qp_h] for every head. Returns [B, H, n, dn+dr]. */
export function projectQueries(x: tf.Tensor, P: Params, pre: string, s: ModelSpec): tf.Tensor4D {
  const [B, n] = x.shape;
  const q =
    s.dq > 0
      ? linear(rmsNorm(linear(x, P[`${pre}q_a_proj.weight`]), P[`${pre}q_a_layernorm.weight`], s.normEps), P[`${pre}q_b_proj.weight`])
      : linear(x, P[`${pre}q_proj.weight`]); // [B, n, H*(dn+dr)]
  return q.reshape([B, n, s.H, s.dn + s.dr]).transpose([0, 2, 1, 3]) as tf.Tensor4D; // [B, H, n, dn+dr]
}

/** [a ; kp] = W_DKV x, c = RMSNorm_kv(a). Returns c [B, n, dc] and the un-rotated shared key kp [B, n, dr]. */
export function projectLatent(x: tf.Tensor, P: Params, pre: string, s: ModelSpec): { c: tf.Tensor3D; kp: tf.Tensor3D } {
  // Two products over row slices of W_DKV rather than one product and a split of the activations: the weight is
  // small, and its row slices are contiguous.
  const w = P[`${pre}kv_a_proj_with_mqa.weight`]; // [dc+dr, d]
  const a = linear(x, w.slice([0, 0], [s.dc, -1])); // [B, n, dc]
  const kp = linear(x, w.slice([s.dc, 0], [s.dr, -1])); // [B, n, dr]
  return { c: rmsNorm(a, P[`${pre}kv_a_layernorm.weight`], s.normEps) as tf.Tensor3D, kp: kp as tf.Tensor3D };
}

/** W_UKV split per head: W_UK [H, dn, dc] and W_UV [H, dv, dc]. */
export function upProjections(P: Params, pre: string, s: ModelSpec): { wUK: tf.Tensor3D; wUV: tf.Tensor3D } {
  const w = P[`${pre}kv_b_proj.weight`].reshape([s.H, s.dn + s.dv, s.dc]); // rows are per-head blocks [kn_h ; v_h]
  const [wUK, wUV] = tf.split(w, [s.dn, s.dv], 1);
  return { wUK: wUK as tf.Tensor3D, wUV: wUV as tf.Tensor3D };
}

/** Per-head content keys and values [kn_h ; v_h] = W_UKV^h c, in one product. Returns [B, H, S, dn] and [B, H, S, dv]. */
function expandLatent(c: tf.Tensor3D, P: Params, pre: string, s: ModelSpec): { kn: tf.Tensor4D; v: tf.Tensor4D } {
  const [B, S] = c.shape;
  const { wUK, wUV } = upProjections(P, pre, s);
  // Split the (small) weight per head rather than the (large) activations.
  const kn = linear(c, wUK.reshape([s.H * s.dn, s.dc])).reshape([B, S, s.H, s.dn]).transpose([0, 2, 1, 3]); // [B, H, S, dn]
  const v = linear(c, wUV.reshape([s.H * s.dv, s.dc])).reshape([B, S, s.H, s.dv]).transpose([0, 2, 1, 3]); // [B, H, S, dv]
  return { kn: kn as tf.Tensor4D, v: v as tf.Tensor4D };
}

/** Repeat the single shared positional key for every head: [B, S, dr] -> [B, H, S, dr]. */
function perHead(kp: tf.Tensor3D, H: number): tf.Tensor4D {
  const [B, S, dr] = kp.shape;
  return tf.broadcastTo(kp.reshape([B, 1, S, dr]), [B, H, S, dr]) as tf.Tensor4D;
}

// ---------------------------------------------------------------------------------------------------------------
// QK-norm statistics (§3): heads split into G groups of consecutive heads, one RMS per group and token.

/** 1 / sqrt(mean over the group's heads and features of z^2 + eps). z [B, H, n, D] -> [B, G, n]. */
export function groupInvRms(z: tf.Tensor4D, G: number, eps: number): tf.Tensor3D {
  const [B, H, n, D] = z.shape;
  const grouped = z.reshape([B, G, H / G, n, D]);
  return tf.rsqrt(tf.add(tf.mean(tf.square(grouped), [2, 4]), eps)) as tf.Tensor3D; // [B, G, n]
}

/**
 * z ⊙ r with a per-group factor r [B, G, n, D'] (D' = 1 or D) spread over the group's heads: z [B, H, n, D].
 * A broadcasting product on the grouped view rather than broadcastTo/tile onto heads, whose gradients tfjs lacks
 * for rank-5 tensors (every G < H failed at the first backward pass). For G = H the products are the same ones.
 */
function scaleGroups(z: tf.Tensor4D, r: tf.Tensor4D, G: number): tf.Tensor4D {
  const [B, H, n, D] = z.shape;
  const [, , , Dr] = r.shape;
  const grouped = z.reshape([B, G, H / G, n, D]);
  return tf.mul(grouped, r.reshape([B, G, 1, n, Dr])).reshape([B, H, n, D]) as tf.Tensor4D;
}

function normalizeGroups(z: tf.Tensor4D, w: tf.Tensor, s: ModelSpec): tf.Tensor4D {
  const [B, , n] = z.shape;
  const r = groupInvRms(z, s.G, s.qkEps).reshape([B, s.G, n, 1]) as tf.Tensor4D;
  return tf.mul(scaleGroups(z, r, s.G), w) as tf.Tensor4D;
}

/**
 * Explicit QK-norm (§3) on full per-head queries and keys [B, H, n, dn+dr], before RoPE. Identity for the other
 * variants. Scope `nope` leaves the positional slices exactly as in plain MLA.
 */
function explicitQkNorm(q: tf.Tensor4D, k: tf.Tensor4D, P: Params, pre: string, s: ModelSpec): { q: tf.Tensor4D; k: tf.Tensor4D } {
  if (s.variant !== 'qk-norm') return { q, k };
  const gq = P[`${pre}q_norm.weight`];
  const gk = P[`${pre}k_norm.weight`];
  if (s.scope === 'full') return { q: normalizeGroups(q, gq, s), k: normalizeGroups(k, gk, s) };
  return { q: normalizeContentOnly(q, gq, s), k: normalizeContentOnly(k, gk, s) };
}

/**
 * Scope `nope` on rows [content (dn) ; positional (dr)]: the statistic over the content slice only, the weight and
 * 1/RMS applied to the content slice, the positional slice passed through exactly. Masks instead of a split keep
 * the activations whole.
 */
function normalizeContentOnly(z: tf.Tensor4D, w: tf.Tensor, s: ModelSpec): tf.Tensor4D {
  const [B, H, n, D] = z.shape;
  const contentMask = tf.concat([tf.ones([s.dn]), tf.zeros([s.dr])]); // [D]
  const grouped = tf.mul(z, contentMask).reshape([B, s.G, H / s.G, n, D]);
  // mean over the group's content features = sum / (heads per group * dn)
  const inv = tf.rsqrt(tf.add(tf.div(tf.sum(tf.square(grouped), [2, 4]), (H / s.G) * s.dn), s.qkEps)) as tf.Tensor3D; // [B, G, n]
  const factor = tf.add(tf.mul(inv.reshape([B, s.G, n, 1]), contentMask), tf.sub(1, contentMask)) as tf.Tensor4D; // [B, G, n, D]
  const weight = tf.concat([w, tf.ones([s.dr])]); // [D]: positional features keep weight 1
  return tf.mul(scaleGroups(z, factor, s.G), weight) as tf.Tensor4D;
}

/** RoPE on the dr slice of [..., n, dn+dr] rows at positions pos..pos+n-1. */
function rotatePositional(z: tf.Tensor4D, rope: RopeTables, pos: number, s: ModelSpec): tf.Tensor4D {
  return rope.rotateTail(z, pos, s.dn) as tf.Tensor4D;
}

// ---------------------------------------------------------------------------------------------------------------
// Training form (§1, §3): full keys and values are materialised for every head.

/**
 * Causal self-attention over a whole sequence (positions 0..n-1).
 * `trackMaxLogit` adds one max-reduction over the score tensor that softmax reads anyway (§6).
 */
export function attentionTrainingForm(
  x: tf.Tensor3D,
  P: Params,
  pre: string,
  s: ModelSpec,
  rope: RopeTables,
  trackMaxLogit: boolean,
): AttentionResult {
  const [B, n] = x.shape;
  const q = projectQueries(x, P, pre, s); // [B, H, n, dn+dr]
  const { c, kp } = projectLatent(x, P, pre, s);
  const { kn, v } = expandLatent(c, P, pre, s);
  const k = tf.concat([kn, perHead(kp, s.H)], -1) as tf.Tensor4D; // [B, H, n, dn+dr]
  const normed = explicitQkNorm(q, k, P, pre, s);
  const qr = rotatePositional(normed.q, rope, 0, s);
  const kr = rotatePositional(normed.k, rope, 0, s);

  const scores = tf.add(tf.mul(matmul(qr, kr, false, true), attentionScale(s)), causalMask(n, n)); // [B, H, n, n]
  // Reduce the contiguous key axis first: a reduction over non-trailing axes makes the CPU backends transpose
  // the whole [B, H, n, n] score tensor, which cost about a quarter of a training step on wasm.
  const maxLogit = trackMaxLogit ? (tf.max(tf.max(scores, -1), [0, 2]) as tf.Tensor1D) : undefined;
  const probs = tf.softmax(scores, -1);
  const o = matmul(probs, v); // [B, H, n, dv]
  const merged = o.transpose([0, 2, 1, 3]).reshape([B, n, s.H * s.dv]);
  return { out: linear(merged, P[`${pre}o_proj.weight`]), maxLogit };
}

// ---------------------------------------------------------------------------------------------------------------
// Absorbed decode (§2, §4). The cache holds what the kind needs; new tokens are appended, then attended.

/** Per-layer cache contents. Unused fields stay undefined. */
export interface LayerCacheState {
  c?: tf.Tensor3D; // [B, S, dc] latent
  kpr?: tf.Tensor3D; // [B, S, dr] rotated positional key (with gk_p folded in for latent+invrms, scope full)
  rk?: tf.Tensor3D; // [B, G, S] inverse key RMS per group (latent+invrms)
  k?: tf.Tensor4D; // [B, H, S, dn+dr] full normalised rotated keys (full-key)
}

function append<T extends tf.Tensor>(old: T | undefined, add: T, axis: number): T {
  return (old ? tf.concat([old, add], axis) : add) as T;
}

/** qa_h = W_UK^h^T qn_h: the query moved into latent space. qn [B, H, n, dn] -> [B, H, n, dc]. */
export function absorbQuery(qn: tf.Tensor4D, wUK: tf.Tensor3D): tf.Tensor4D {
  const [B, H, n, dn] = qn.shape;
  const qh = qn.transpose([1, 0, 2, 3]).reshape([H, B * n, dn]);
  return matmul(qh, wUK).reshape([H, B, n, -1]).transpose([1, 0, 2, 3]) as tf.Tensor4D; // [B, H, n, dc]
}

/** Scores of n queries per head against S cached rows: a [B, H, n, D] · m [B, S, D] -> [B, H, n, S]. */
function scoreAgainstShared(a: tf.Tensor4D, m: tf.Tensor3D): tf.Tensor4D {
  const [B, H, n, D] = a.shape;
  return matmul(a.reshape([B, H * n, D]), m, false, true).reshape([B, H, n, m.shape[1]]) as tf.Tensor4D;
}

/** Softmax, latent-space attention output u_h = sum_j p c(j), then W_UV^h and W_O. scores [B, H, n, S]. */
function latentValuesOut(scores: tf.Tensor4D, c: tf.Tensor3D, wUV: tf.Tensor3D, P: Params, pre: string, s: ModelSpec): tf.Tensor {
  const [B, H, n, S] = scores.shape;
  const p = tf.softmax(scores, -1);
  const u = matmul(p.reshape([B, H * n, S]), c).reshape([B, H, n, s.dc]); // [B, H, n, dc]
  const uh = u.transpose([1, 0, 2, 3]).reshape([H, B * n, s.dc]);
  const o = matmul(uh, wUV, false, true).reshape([H, B, n, s.dv]).transpose([1, 2, 0, 3]); // [B, n, H, dv]
  return linear(o.reshape([B, n, H * s.dv]), P[`${pre}o_proj.weight`]);
}

/**
 * One decode call for n new tokens at positions pos..pos+n-1 (prefill when n > 1, a step when n = 1).
 * Returns the attention output and the grown cache; the caller owns (keeps/disposes) the cache tensors.
 */
export function attentionDecode(
  kind: 'latent' | 'latent+invrms' | 'full-key',
  x: tf.Tensor3D,
  P: Params,
  pre: string,
  s: ModelSpec,
  rope: RopeTables,
  pos: number,
  cache: LayerCacheState,
): { out: tf.Tensor; cache: LayerCacheState } {
  const n = x.shape[1];
  const q = projectQueries(x, P, pre, s); // [B, H, n, dn+dr]
  const [qn, qp] = tf.split(q, [s.dn, s.dr], -1) as tf.Tensor4D[];
  const { c: cNew, kp } = projectLatent(x, P, pre, s);
  const { wUK, wUV } = upProjections(P, pre, s);
  const c = append(cache.c, cNew, 1); // [B, S, dc]
  const S = c.shape[1];
  const mask = n > 1 ? causalMask(n, S) : undefined;
  const scale = attentionScale(s);
  const finish = (raw: tf.Tensor4D) => (mask ? tf.add(raw, mask) : raw) as tf.Tensor4D;

  if (kind === 'latent') {
    if (s.variant === 'qk-norm') throw new Error('the plain latent cache cannot apply QK-norm; use latent+invrms');
    const kpr = append(cache.kpr, rope.apply(kp, pos) as tf.Tensor3D, 1); // [B, S, dr]
    const raw = tf.add(scoreAgainstShared(absorbQuery(qn, wUK), c), scoreAgainstShared(rope.apply(qp, pos) as tf.Tensor4D, kpr));
    const scores = finish(tf.mul(raw, scale) as tf.Tensor4D);
    return { out: latentValuesOut(scores, c, wUV, P, pre, s), cache: { c, kpr } };
  }

  if (kind === 'latent+invrms') {
    if (s.variant !== 'qk-norm') throw new Error('the latent+invrms cache is for the qk-norm variant');
    const gq = P[`${pre}q_norm.weight`];
    const gk = P[`${pre}k_norm.weight`];
    const full = s.scope === 'full';
    const [gqN, gqP] = full ? tf.split(gq, [s.dn, s.dr]) : [gq, undefined];
    const [gkN, gkP] = full ? tf.split(gk, [s.dn, s.dr]) : [gk, undefined];
    // Append: the full keys exist only long enough to give one inverse RMS per group (§4), then are dropped.
    const knNew = expandLatent(cNew, P, pre, s).kn; // [B, H, n, dn]
    const keysForStat = full ? (tf.concat([knNew, perHead(kp, s.H)], -1) as tf.Tensor4D) : knNew;
    const rk = append(cache.rk, groupInvRms(keysForStat, s.G, s.qkEps), 2); // [B, G, S]
    const kpr = append(cache.kpr, rope.apply(full ? tf.mul(kp, gkP!) : kp, pos) as tf.Tensor3D, 1); // [B, S, dr]
    // Query side: fresh statistic, static key weight folded into the absorbed query.
    const rq = groupInvRms(full ? q : qn, s.G, s.qkEps); // [B, G, n]
    const qa = absorbQuery(tf.mul(qn, tf.mul(gkN, gqN)) as tf.Tensor4D, wUK); // [B, H, n, dc]
    const qpr = rope.apply(full ? tf.mul(qp, gqP!) : qp, pos) as tf.Tensor4D;
    const [B] = q.shape;
    const hpg = s.H / s.G;
    // One elementwise factor rq*rk per (group, query, key), broadcast over the group's heads.
    const factor = tf.mul(rq.reshape([B, s.G, 1, n, 1]), rk.reshape([B, s.G, 1, 1, S])); // [B, G, 1, n, S]
    const content = scoreAgainstShared(qa, c).reshape([B, s.G, hpg, n, S]);
    const positional = scoreAgainstShared(qpr, kpr).reshape([B, s.G, hpg, n, S]);
    const raw = full ? tf.mul(tf.add(content, positional), factor) : tf.add(tf.mul(content, factor), positional);
    const scores = finish(tf.mul(raw, scale).reshape([B, s.H, n, S]) as tf.Tensor4D);
    return { out: latentValuesOut(scores, c, wUV, P, pre, s), cache: { c, kpr, rk } };
  }

  // full-key: the explicit QK-norm reference (and a standard per-head key cache for the other variants).
  const kNew = tf.concat([expandLatent(cNew, P, pre, s).kn, perHead(kp, s.H)], -1) as tf.Tensor4D; // [B, H, n, dn+dr]
  const normed = explicitQkNorm(q, kNew, P, pre, s);
  const k = append(cache.k, rotatePositional(normed.k, rope, pos, s), 2); // [B, H, S, dn+dr]
  const scores = finish(tf.mul(matmul(rotatePositional(normed.q, rope, pos, s), k, false, true), scale) as tf.Tensor4D);
  return { out: latentValuesOut(scores, c, wUV, P, pre, s), cache: { c, k } };
}
