/**
 * Absorbed decode (design note §2, §4): the one decode path, run by `generate` and `verify` (through
 * IncrementalDecoder, transformer.ts) and timed by `bench decode`. Two halves:
 *   - append: what a cache stores for new tokens. Their explicit keys exist only where a cache needs them (rk of
 *     latent+invrms, the keys of full-key) and are dropped after;
 *   - attend (`absorbedDecodeStep`): n new tokens per sequence (one in a decode step, a whole prompt in a
 *     prefill, causal within the block) against a cache whose last n rows are their own. The step reads the cache
 *     and never grows it.
 *
 * Arranged so that latent+invrms costs the plain latent step plus one read of its G inverse-RMS numbers per token:
 *   - the per-query numbers (softmax scale, rq, the static QK-norm weights) go into the query, never the scores;
 *   - the only per-key factor, rk_g(j), multiplies the scores once, broadcast over the group's heads.
 * So latent: content and positional products, their sum, transpose, softmax, values product. latent+invrms: the
 * same and one broadcasted multiply, which reads G*S extra floats.
 *
 * Layout choices follow the wasm backend, whose matrix products take XNNPACK's fast path only without transposed
 * operands and with a batch of 1 (otherwise a scalar triple loop, about 10x slower): weights are stored
 * pre-transposed ([in, out]), the scores are computed as c · Q^T ([S, n*H], the long dimension as the product's
 * rows), and every sequence has its own cache tensors; sequences are looped. Keeping c and kpr apart costs one add
 * but lets the values product read only c: measured 5% faster than one [S, dc+dr] block.
 *
 * Appending concatenates, a copy of the cache: TensorFlow.js has no in-place row write (a serving engine writes
 * the new row at O(1)), and the decode benchmark times the step alone, against caches built once.
 *
 * Shapes: B sequences, n new tokens per sequence, S cached tokens (the new ones included), H heads, G key groups,
 * dc latent, dn content head width, dr positional width, dv value head width. Rows of new tokens are ordered
 * sequence-major ([B*n, ...]). Every function expects to run inside the caller's tf.tidy.
 */
import * as tf from '@tensorflow/tfjs';
import { divideByGroupRms, groupInvRms, qkNorm } from './attention';
import { causalMask, rmsNorm, ropeWeight, type RopeTables, type RopeWeight } from './layers';
import type { Params } from './params';
import { attentionScale, type CacheKind, type ModelSpec } from './spec';
import { hasQkNorm } from './variants';

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
   * The softmax scale times, for qk-norm scope full, gq_p: what multiplies a positional query before RoPE, folded
   * into the rotation. Tensors, not host numbers: reading gq_p back synchronously is impossible on webgpu in Node.
   */
  positionalQueryWeight: RopeWeight;
  /** Every head's W_UK^h^T side by side, [dc, H*dn]: explicit content keys of a block of tokens at append time. */
  wUKAllT: tf.Tensor2D;
  /** Per head W_UV^h^T [dc, dv]. */
  wUVT: tf.Tensor2D[];
  /** [H*dv, d] */
  wOT: tf.Tensor2D;
  /** QK-norm weights gq, gk (size dn+dr for scope full, dn for nope) and, for scope full, gk's positional part. */
  qkNorm?: { gq: tf.Tensor1D; gk: tf.Tensor1D; gkP?: tf.Tensor1D };
}

/** Rearrange one layer's parameters (prefix such as `model.layers.0.self_attn.`) for decoding. */
export function prepareDecodeLayer(P: Params, pre: string, s: ModelSpec): DecodeLayer {
  let prepared: DecodeLayer | undefined;
  // Intermediates (the split weight blocks) are freed by the tidy; what the layer holds is kept.
  tf.tidy(() => {
    const keep = <T extends tf.Tensor>(t: T): T => tf.keep(t);
    const scale = attentionScale(s);
    const w = P[`${pre}kv_b_proj.weight`].reshape([s.H, s.dn + s.dv, s.dc]); // per-head blocks [kn_h ; v_h]
    const [wUKAll, wUVAll] = tf.split(w, [s.dn, s.dv], 1) as tf.Tensor3D[]; // [H, dn, dc], [H, dv, dc]
    const full = s.scope === 'full';
    const gq = hasQkNorm(s) ? (P[`${pre}q_norm.weight`] as tf.Tensor1D) : undefined;
    const gk = hasQkNorm(s) ? (P[`${pre}k_norm.weight`] as tf.Tensor1D) : undefined;
    const positional = gq && full ? tf.mul(gq.slice([s.dn], [s.dr]), scale) : tf.fill([s.dr], scale);
    const absorbing = gq && gk ? tf.mul(wUKAll, tf.mul(gk.slice([0], [s.dn]), gq.slice([0], [s.dn])).reshape([1, s.dn, 1])) : wUKAll;
    const rw = ropeWeight(positional as tf.Tensor1D);
    const layer: DecodeLayer = {
      spec: s,
      wDKVT: keep(P[`${pre}kv_a_proj_with_mqa.weight`].transpose() as tf.Tensor2D),
      kvNorm: keep(P[`${pre}kv_a_layernorm.weight`].clone() as tf.Tensor1D),
      wUK: tf.unstack(tf.mul(absorbing, scale)).map((t) => keep(t as tf.Tensor2D)),
      positionalQueryWeight: { w: keep(rw.w), swapped: keep(rw.swapped) },
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
    if (gq && gk) layer.qkNorm = { gq: keep(gq.clone()), gk: keep(gk.clone()), gkP: full ? keep(gk.slice([s.dn], [s.dr])) : undefined };
    prepared = layer;
  });
  return prepared!;
}

export function disposeDecodeLayer(l: DecodeLayer): void {
  const q = l.qkNorm;
  const pw = l.positionalQueryWeight;
  tf.dispose([l.wQT, l.wQAT, l.qANorm, l.wQBT, l.wDKVT, l.kvNorm, ...l.wUK, l.wUKAllT, ...l.wUVT, l.wOT, pw.w, pw.swapped].filter(Boolean) as tf.Tensor[]);
  if (q) tf.dispose([q.gq, q.gk, q.gkP].filter(Boolean) as tf.Tensor[]);
}

// ---------------------------------------------------------------------------------------------------------------
// Caches: one tensor per sequence (and per head for full-key keys), token-major.

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
  c: tf.Tensor2D[];
}

export type FixedCache = LatentFixedCache | FullKeyFixedCache;

export function fixedCacheLength(cache: FixedCache): number {
  return cache.c[0].shape[0];
}

export function fixedCacheTensors(cache: FixedCache): tf.Tensor[] {
  return cache.kind === 'full-key' ? [...cache.keys.flat(), ...cache.c] : [...cache.c, ...cache.kpr, ...(cache.rk ?? [])];
}

export function disposeFixedCache(cache: FixedCache): void {
  tf.dispose(fixedCacheTensors(cache));
}

/** What a cache holds, name -> shape, with the sequences as a leading axis: c, kpr, rk (latent kinds) or c, k. */
export function fixedCacheShapes(cache: FixedCache): Record<string, number[]> {
  const B = cache.c.length;
  const S = fixedCacheLength(cache);
  const [, dc] = cache.c[0].shape;
  if (cache.kind === 'full-key') return { c: [B, S, dc], k: [B, cache.keys[0].length, S, cache.keys[0][0].shape[1]] };
  const out: Record<string, number[]> = { c: [B, S, dc], kpr: [B, S, cache.kpr[0].shape[1]] };
  if (cache.rk) out.rk = [B, S, cache.rk[0].shape[1]];
  return out;
}

// ---------------------------------------------------------------------------------------------------------------
// Append-time math: what a cache stores for n new tokens per sequence at positions start..start+n-1.

/** The latent of new tokens: [a ; kp] = W_DKV x, c = RMSNorm_kv(a). x [..., d] -> c [..., dc], kp [..., dr]. */
export function latentOf<T extends tf.Tensor>(l: DecodeLayer, x: T): { c: T; kp: T } {
  const s = l.spec;
  const lead = x.shape.slice(0, -1);
  const [a, kp] = tf.split(tf.matMul(x.reshape([-1, s.d]) as tf.Tensor2D, l.wDKVT), [s.dc, s.dr], -1);
  return { c: rmsNorm(a, l.kvNorm, s.normEps).reshape([...lead, s.dc]) as T, kp: kp.reshape([...lead, s.dr]) as T };
}

/** Explicit un-normalised, un-rotated keys k_h = [W_UK^h c ; kp] of m tokens: kn [m, H, dn], k [m, H, dn+dr]. */
function explicitKeys(l: DecodeLayer, c: tf.Tensor2D, kp: tf.Tensor2D): { kn: tf.Tensor3D; k: tf.Tensor3D } {
  const s = l.spec;
  const m = c.shape[0];
  const kn = tf.matMul(c, l.wUKAllT).reshape([m, s.H, s.dn]) as tf.Tensor3D;
  const kpHeads = tf.broadcastTo(kp.reshape([m, 1, s.dr]), [m, s.H, s.dr]);
  return { kn, k: tf.concat([kn, kpHeads], -1) as tf.Tensor3D };
}

/** Per-token rows z [m, H, w] as the training form's [batch, heads, tokens, features] with one token each. */
function asHeadRows(z: tf.Tensor3D): tf.Tensor4D {
  const [m, H, w] = z.shape;
  return z.reshape([m, H, 1, w]) as tf.Tensor4D;
}

/**
 * What a latent-kind cache stores for new tokens c [B, n, dc], kp [B, n, dr]: the rotated shared key [B, n, dr]
 * and, for latent+invrms, the inverse key RMS per group [B, n, G]. The full keys exist only here, long enough to
 * give one number per group (§4); the positional key carries the static weight gk_p for scope `full`. The latent c
 * itself is stored as it is.
 */
export function latentCacheRows(
  kind: 'latent' | 'latent+invrms',
  l: DecodeLayer,
  c: tf.Tensor3D,
  kp: tf.Tensor3D,
  start: number,
  rope: RopeTables,
): { kpr: tf.Tensor3D; rk?: tf.Tensor3D } {
  const s = l.spec;
  if (kind === 'latent') {
    if (l.qkNorm) throw new Error('the plain latent cache cannot apply QK-norm; use latent+invrms');
    return { kpr: rope.apply(kp, start) as tf.Tensor3D };
  }
  if (!l.qkNorm) throw new Error('the latent+invrms cache is for the qk-norm variant');
  const [B, n] = c.shape;
  const full = s.scope === 'full';
  const { kn, k } = explicitKeys(l, c.reshape([B * n, s.dc]), kp.reshape([B * n, s.dr]));
  const rk = groupInvRms(asHeadRows(full ? k : kn), s.G, s.qkEps).reshape([B, n, s.G]) as tf.Tensor3D;
  return { kpr: rope.apply(full ? tf.mul(kp, l.qkNorm.gkP!) : kp, start) as tf.Tensor3D, rk };
}

/** Per-head keys of a full-key cache for new tokens c [B, n, dc], kp [B, n, dr]: QK-normed (§3) and rotated, [B, H, n, dn+dr]. */
export function fullKeyCacheRows(l: DecodeLayer, c: tf.Tensor3D, kp: tf.Tensor3D, start: number, rope: RopeTables): tf.Tensor4D {
  const s = l.spec;
  const [B, n] = c.shape;
  const { k } = explicitKeys(l, c.reshape([B * n, s.dc]), kp.reshape([B * n, s.dr]));
  const normed = l.qkNorm ? qkNorm(asHeadRows(k), l.qkNorm.gk, s) : k;
  const byHead = normed.reshape([B, n, s.H, s.dn + s.dr]).transpose([0, 2, 1, 3]); // [B, H, n, dn+dr]
  const [content, positional] = tf.split(byHead, [s.dn, s.dr], -1);
  return tf.concat([content, rope.apply(positional, start)], -1) as tf.Tensor4D;
}

/**
 * The cache after appending new tokens whose normed hidden states are x [B, n, d]: new tensors, the given cache
 * untouched (the caller keeps or disposes both). Without a cache, a fresh one at position 0.
 */
export function appendTokens(kind: CacheKind, l: DecodeLayer, cache: FixedCache | undefined, x: tf.Tensor3D, rope: RopeTables): FixedCache {
  if (cache && cache.kind !== kind) throw new Error(`append: a ${kind} block for a ${cache.kind} cache`);
  if (cache && cache.c.length !== x.shape[0]) throw new Error(`append: ${x.shape[0]} sequences for a cache of ${cache.c.length}`);
  const start = cache ? fixedCacheLength(cache) : 0;
  const { c, kp } = latentOf(l, x); // [B, n, dc], [B, n, dr]
  const perSequence = (t: tf.Tensor) => tf.unstack(t) as tf.Tensor2D[];
  const grow = (old: tf.Tensor2D[] | undefined, rows: tf.Tensor2D[]) => (old ? rows.map((r, b) => tf.concat([old[b], r]) as tf.Tensor2D) : rows);
  const cs = grow(cache?.c, perSequence(c));
  if (kind === 'full-key') {
    const old = cache as FullKeyFixedCache | undefined;
    const keys = perSequence(fullKeyCacheRows(l, c, kp, start, rope)).map((k, b) => grow(old?.keys[b], perSequence(k)));
    return { kind, keys, c: cs };
  }
  const old = cache as LatentFixedCache | undefined;
  const rows = latentCacheRows(kind, l, c, kp, start, rope);
  const rk = rows.rk ? grow(old?.rk, perSequence(rows.rk)) : undefined;
  return { kind, c: cs, kpr: grow(old?.kpr, perSequence(rows.kpr)), ...(rk ? { rk } : {}) };
}

// ---------------------------------------------------------------------------------------------------------------
// The step

/** q_h = [qn_h ; qp_h] of new tokens. x [m, d] -> [m, H, dn+dr]. */
function projectQuery(l: DecodeLayer, x: tf.Tensor2D): tf.Tensor3D {
  const s = l.spec;
  const q = l.wQT ? tf.matMul(x, l.wQT) : tf.matMul(rmsNorm(tf.matMul(x, l.wQAT!), l.qANorm!, s.normEps) as tf.Tensor2D, l.wQBT!);
  return q.reshape([x.shape[0], s.H, s.dn + s.dr]) as tf.Tensor3D;
}

/** qa_h = W_UK^h^T qn_h, one small product per head. [m, H, dn] -> [m, H, dc]. */
function absorbQueries(l: DecodeLayer, qn: tf.Tensor3D): tf.Tensor3D {
  const perHead = tf.unstack(qn, 1) as tf.Tensor2D[]; // H x [m, dn]
  return tf.stack(perHead.map((qh, h) => tf.matMul(qh, l.wUK[h])), 1) as tf.Tensor3D;
}

/** Each head's rows z [m, H, w] divided by the RMS of its key group's rows: §3's statistic, for the query. */
function divideQueryByGroupRms(z: tf.Tensor3D, s: ModelSpec): tf.Tensor3D {
  return divideByGroupRms(asHeadRows(z), s.G, s.qkEps).reshape(z.shape) as tf.Tensor3D;
}

/**
 * Rotate positional query rows z [B*n, H, dr] of n tokens per sequence at positions pos..pos+n-1, after
 * multiplying by `weight`. RoPE wants the positions on the second-to-last axis.
 */
function rotateQueries(z: tf.Tensor3D, B: number, n: number, pos: number, rope: RopeTables, weight?: RopeWeight): tf.Tensor3D {
  const [, H, dr] = z.shape;
  if (n === 1) return rope.apply(z.reshape([B * H, 1, dr]), pos, weight).reshape(z.shape) as tf.Tensor3D;
  const byPosition = z.reshape([B, n, H, dr]).transpose([0, 2, 1, 3]); // [B, H, n, dr]
  return rope.apply(byPosition, pos, weight).transpose([0, 2, 1, 3]).reshape(z.shape) as tf.Tensor3D;
}

/** Scores [n*H, S] of n new tokens plus the causal mask within their block (the last n keys): a no-op for n = 1. */
function maskBlock(scores: tf.Tensor2D, n: number): tf.Tensor2D {
  if (n === 1) return scores;
  const [rows, S] = scores.shape;
  return tf.add(scores.reshape([n, rows / n, S]), causalMask(n, S).reshape([n, 1, S])).reshape([rows, S]) as tf.Tensor2D;
}

/** u [m, H, dc] -> W_O concat_h(W_UV^h u_h): [m, d]. */
function outputOf(l: DecodeLayer, u: tf.Tensor3D): tf.Tensor2D {
  const perHead = tf.unstack(u, 1) as tf.Tensor2D[]; // H x [m, dc]
  const o = tf.concat(perHead.map((uh, h) => tf.matMul(uh, l.wUVT[h])), -1) as tf.Tensor2D; // [m, H*dv]
  return tf.matMul(o, l.wOT);
}

/**
 * rk_g(j) on the scores of group g's heads: z [S, n*H] (columns token by token, heads within), rk [S, G]. With
 * one token and one head per group the shapes already match and no broadcast is needed.
 */
function scaleByKeyGroup(z: tf.Tensor2D, rk: tf.Tensor2D, n: number): tf.Tensor2D {
  const [S, columns] = z.shape;
  const G = rk.shape[1];
  if (columns === G) return tf.mul(z, rk);
  return tf.mul(z.reshape([S, n, G, columns / (n * G)]), rk.reshape([S, 1, G, 1])).reshape([S, columns]) as tf.Tensor2D;
}

/**
 * Attention output of new tokens x [B, n, d], n per sequence, whose own rows are already the cache's last n rows
 * (positions S-n..S-1): [B, n, d]. n = 1 is a decode step; n > 1 a prefill, causal within the block. The cache kind
 * must serve the layer's variant.
 */
export function absorbedDecodeStep(l: DecodeLayer, x: tf.Tensor3D, cache: FixedCache, rope: RopeTables): tf.Tensor3D {
  const s = l.spec;
  const [B, n] = x.shape;
  const S = fixedCacheLength(cache);
  if (cache.c.length !== B) throw new Error(`decode step: ${B} sequences of new tokens for a cache of ${cache.c.length} sequences`);
  if (n > S) throw new Error(`decode step: ${n} new tokens but only ${S} cached rows (append them first)`);
  const pos = S - n;
  const q = projectQuery(l, x.reshape([B * n, s.d]) as tf.Tensor2D); // [B*n, H, dn+dr]
  if (cache.kind === 'full-key') return outputOf(l, fullKeyAttend(l, q, cache, B, n, pos, rope)).reshape([B, n, s.d]) as tf.Tensor3D;
  if (cache.kind === 'latent' && l.qkNorm) throw new Error('the plain latent cache cannot apply QK-norm; use latent+invrms');
  if (cache.kind === 'latent+invrms' && !l.qkNorm) throw new Error('the latent+invrms cache is for the qk-norm variant');

  // Per-query factors go into the query, so no pass over [n*H, S] applies them: the softmax scale and the static
  // QK-norm weights are already in wUK and in the rotation's weight; rq multiplies the query itself (its content
  // slice only for scope nope), taken before any weight as explicit QK-norm does.
  const invrms = cache.kind === 'latent+invrms';
  const full = s.scope === 'full';
  let [qn, qp] = tf.split(invrms && full ? divideQueryByGroupRms(q, s) : q, [s.dn, s.dr], -1) as tf.Tensor3D[];
  if (invrms && !full) qn = divideQueryByGroupRms(qn, s);
  const qa = absorbQueries(l, qn); // [B*n, H, dc]
  const qpr = rotateQueries(qp, B, n, pos, rope, l.positionalQueryWeight); // [B*n, H, dr]
  const rows = n * s.H;

  const us: tf.Tensor2D[] = [];
  for (let b = 0; b < B; b++) {
    const qaT = qa.slice([b * n, 0, 0], [n, -1, -1]).reshape([rows, s.dc]).transpose() as tf.Tensor2D; // [dc, n*H]
    const qprT = qpr.slice([b * n, 0, 0], [n, -1, -1]).reshape([rows, s.dr]).transpose() as tf.Tensor2D; // [dr, n*H]
    const content = tf.matMul(cache.c[b], qaT) as tf.Tensor2D; // [S, n*H]
    const positional = tf.matMul(cache.kpr[b], qprT) as tf.Tensor2D; // [S, n*H]
    let scoresT: tf.Tensor2D; // [S, n*H]
    if (!invrms) {
      scoresT = tf.add(content, positional);
    } else {
      // The one pass latent does not make: rk_g(j) on the scores of group g's heads (on the content term only for
      // scope nope, where the positional slices are not normalised).
      const rk = cache.rk![b];
      scoresT = full ? scaleByKeyGroup(tf.add(content, positional), rk, n) : tf.add(scaleByKeyGroup(content, rk, n), positional);
    }
    const p = tf.softmax(maskBlock(scoresT.transpose(), n)); // [n*H, S]
    us.push(tf.matMul(p, cache.c[b])); // [n*H, dc]
  }
  return outputOf(l, tf.concat(us).reshape([B * n, s.H, s.dc]) as tf.Tensor3D).reshape([B, n, s.d]) as tf.Tensor3D;
}

/** t^T of a matrix [r, k]; a reshape, which moves no data, when r or k is 1. */
function transposed(t: tf.Tensor2D): tf.Tensor2D {
  const [r, k] = t.shape;
  return (r === 1 || k === 1 ? t.reshape([k, r]) : t.transpose()) as tf.Tensor2D;
}

/** Full-key scores: one product per head against its own keys; the latent gives the values. Returns u [B*n, H, dc]. */
function fullKeyAttend(l: DecodeLayer, q: tf.Tensor3D, cache: FullKeyFixedCache, B: number, n: number, pos: number, rope: RopeTables): tf.Tensor3D {
  const s = l.spec;
  const normed = l.qkNorm ? (qkNorm(asHeadRows(q), l.qkNorm.gq, s).reshape(q.shape) as tf.Tensor3D) : q;
  const [content, positional] = tf.split(normed, [s.dn, s.dr], -1) as tf.Tensor3D[];
  const query = tf.mul(tf.concat([content, rotateQueries(positional, B, n, pos, rope)], -1), attentionScale(s)) as tf.Tensor3D; // [B*n, H, dn+dr]
  const S = fixedCacheLength(cache);
  const us: tf.Tensor2D[] = [];
  for (let b = 0; b < B; b++) {
    const perHead = tf.unstack(query.slice([b * n, 0, 0], [n, -1, -1]), 1) as tf.Tensor2D[]; // H x [n, dn+dr]
    const scores = tf.stack(perHead.map((qh, h) => transposed(tf.matMul(cache.keys[b][h], transposed(qh)))), 1); // [n, H, S]
    us.push(tf.matMul(tf.softmax(maskBlock(scores.reshape([n * s.H, S]) as tf.Tensor2D, n)), cache.c[b])); // [n*H, dc]
  }
  return tf.concat(us).reshape([B * n, s.H, s.dc]) as tf.Tensor3D;
}
