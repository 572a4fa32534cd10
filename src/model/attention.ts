/**
 * Multi-head Latent Attention: the training form for the three variants, and the QK-norm statistic that the
 * decode path (decode.ts) shares with it. The math is `shared/design/mla-math.md`; section numbers refer to it.
 *
 * Shapes: B batch, n tokens (the whole sequence in training), H heads, G key groups, dc latent, dn content
 * (nope) head width, dr shared positional (rope) width, dv value head width.
 * All functions expect to run inside the caller's tf.tidy.
 */
import * as tf from '@tensorflow/tfjs';
import { causalMask, linear, matmul, rmsNorm, RopeTables } from './layers';
import type { Params } from './params';
import type { ModelSpec } from './spec';
import { attentionScale } from './spec';
import { unreachable, variantOf } from './variants';

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
// Decode reuses these on rows [tokens, H, 1, D], so training and decode share one statistic.

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

/** z divided by the RMS of its key group, no weight: z [B, H, n, D]. */
export function divideByGroupRms(z: tf.Tensor4D, G: number, eps: number): tf.Tensor4D {
  const [B, , n] = z.shape;
  return scaleGroups(z, groupInvRms(z, G, eps).reshape([B, G, n, 1]) as tf.Tensor4D, G);
}

/**
 * Explicit QK-norm (§3) of per-head rows z [B, H, n, dn+dr] (queries with gq, keys with gk), before RoPE.
 * Scope `nope` leaves the positional slices exactly as in plain MLA.
 */
export function qkNorm(z: tf.Tensor4D, g: tf.Tensor, s: ModelSpec): tf.Tensor4D {
  return s.scope === 'full' ? (tf.mul(divideByGroupRms(z, s.G, s.qkEps), g) as tf.Tensor4D) : normalizeContentOnly(z, g, s);
}

function explicitQkNorm(q: tf.Tensor4D, k: tf.Tensor4D, P: Params, pre: string, s: ModelSpec): { q: tf.Tensor4D; k: tf.Tensor4D } {
  const transform = variantOf(s).qkTransform;
  switch (transform) {
    case 'none':
      return { q, k };
    case 'qk-norm':
      return { q: qkNorm(q, P[`${pre}q_norm.weight`], s), k: qkNorm(k, P[`${pre}k_norm.weight`], s) };
    default:
      return unreachable(transform);
  }
}

/**
 * Scope `nope` on rows [content (dn) ; positional (dr)]: the statistic over the content slice only, the weight and
 * 1/RMS applied to the content slice, the positional slice passed through exactly. Masks instead of a split keep
 * the activations whole; only the statistic reads the content slice.
 */
function normalizeContentOnly(z: tf.Tensor4D, w: tf.Tensor, s: ModelSpec): tf.Tensor4D {
  const [B, , n] = z.shape;
  const contentMask = tf.concat([tf.ones([s.dn]), tf.zeros([s.dr])]); // [D]
  const inv = groupInvRms(z.slice([0, 0, 0, 0], [-1, -1, -1, s.dn]) as tf.Tensor4D, s.G, s.qkEps); // [B, G, n]
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
