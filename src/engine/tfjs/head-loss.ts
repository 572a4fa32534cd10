// Cross-entropy of the output head, in row chunks when the logits would be large.
//
// With a GPT-2 vocabulary the logits of a micro-batch dominate training memory: 8 x 512 tokens x 50304 ids are
// 0.8 GB, and autodiff keeps them (and the one-hot targets, as large) until the backward pass. On WebGPU one tensor
// may not exceed 2 GiB at all. Here the head's forward pass keeps only two numbers per token (the log-sum-exp and
// the target's logit) and the backward pass recomputes each chunk's logits, so the largest tensor is one chunk's
// [rows, V] and the micro-batch size is no longer capped by the vocabulary.
import * as tf from '@tensorflow/tfjs';
import { maxBindingBytes } from '../../backend';
import { linear, matmul } from '../../model/layers';
import { accumulate } from './accumulate';

/** Cross-entropy (nats per token) plus the optional z-loss that keeps the softmax normaliser near 1 (PaLM). */
export function lossFromLogits(logits: tf.Tensor3D, targets: tf.Tensor2D, zLoss: number): { loss: tf.Scalar; ce: tf.Scalar } {
  const V = logits.shape[2];
  const flat = logits.reshape([-1, V]) as tf.Tensor2D; // [N, V]
  const lse = tf.logSumExp(flat, -1); // [N]
  // A one-hot product rather than a batched gather: the gather's gradient is a segment sum over N*V segments,
  // which the cpu backend computes in O((N*V)^2).
  const picked = tf.sum(tf.mul(flat, tf.oneHot(targets.reshape([-1]) as tf.Tensor1D, V)), -1); // [N] logit of the target
  const ce = tf.mean(tf.sub(lse, picked)) as tf.Scalar;
  const loss = zLoss > 0 ? (tf.add(ce, tf.mul(zLoss, tf.mean(tf.square(lse)))) as tf.Scalar) : ce;
  return { loss, ce };
}

/** Logits up to this size are computed whole (the plain path, bit-identical to `lossFromLogits`). */
export const WHOLE_LOGITS_BYTES = 256 * 2 ** 20;

/** The largest logits tensor the head loss builds on the current backend: under half its binding limit. */
export function logitsBudget(): number {
  const limit = maxBindingBytes();
  return limit ? Math.min(WHOLE_LOGITS_BYTES, Math.floor(limit / 2)) : WHOLE_LOGITS_BYTES;
}

/**
 * Mean cross-entropy (and z-loss) of hidden [B, T, d] under the head W [V, d] against targets [B, T].
 * Whole logits when they fit `budgetBytes`, otherwise chunks of rows with a recomputing backward pass.
 */
export function headLoss(hidden: tf.Tensor3D, W: tf.Tensor2D, targets: tf.Tensor2D, zLoss: number, budgetBytes = logitsBudget()): { loss: tf.Scalar; ce: tf.Scalar } {
  const [B, T, d] = hidden.shape;
  const V = W.shape[0];
  const N = B * T;
  if (N * V * 4 <= budgetBytes) return lossFromLogits(linear(hidden, W) as tf.Tensor3D, targets, zLoss);
  const rows = Math.max(1, Math.floor(budgetBytes / (V * 4)));
  const both = chunkedCrossEntropy(hidden.reshape([N, d]) as tf.Tensor2D, W, targets.reshape([N]) as tf.Tensor1D, zLoss, rows);
  const [loss, ce] = tf.unstack(both) as tf.Scalar[];
  return { loss, ce };
}

/** Row ranges [start, end) of n rows in chunks of `rows`. */
function chunks(n: number, rows: number): [number, number][] {
  const out: [number, number][] = [];
  for (let start = 0; start < n; start += rows) out.push([start, Math.min(n, start + rows)]);
  return out;
}

/**
 * [loss, ce] for h [N, d], W [V, d], targets [N] (int32): ce = mean(lse - logit[target]), loss = ce + z mean(lse^2).
 * Gradient with respect to one row's logits, for upstream [g_loss, g_ce]:
 *   (g_loss + g_ce) (softmax - onehot) / N + g_loss z 2 lse softmax / N,
 * then dh = dlogits W and dW = dlogits^T h, accumulated chunk by chunk.
 */
export function chunkedCrossEntropy(h: tf.Tensor2D, W: tf.Tensor2D, targets: tf.Tensor1D, zLoss: number, rows: number): tf.Tensor1D {
  const N = h.shape[0];
  const V = W.shape[0];
  const parts = chunks(N, rows);
  const fn = (hIn: tf.Tensor, wIn: tf.Tensor, save: tf.GradSaveFunc) => {
    const hh = hIn as tf.Tensor2D;
    const ww = wIn as tf.Tensor2D;
    // Per row: log-sum-exp and the target's logit; each chunk's logits are freed before the next is made.
    const perChunk = parts.map(([a, b]) =>
      tf.tidy(() => {
        const logits = matmul(hh.slice([a, 0], [b - a, -1]), ww, false, true) as tf.Tensor2D; // [rows, V]
        const lse = tf.logSumExp(logits, -1); // [rows]
        const picked = tf.sum(tf.mul(logits, tf.oneHot(targets.slice([a], [b - a]), V)), -1); // [rows]
        return { lse, picked };
      }),
    );
    const lse = tf.concat(perChunk.map((c) => c.lse));
    const picked = tf.concat(perChunk.map((c) => c.picked));
    const ce = tf.mean(tf.sub(lse, picked));
    const loss = zLoss > 0 ? tf.add(ce, tf.mul(zLoss, tf.mean(tf.square(lse)))) : ce;
    // Everything the backward pass reads must be saved: autodiff frees the forward pass's other tensors (here the
    // reshaped targets too) before it runs.
    save([hh, ww, lse, targets]);
    return {
      value: tf.stack([loss, ce]) as tf.Tensor1D,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [hs, ws, lseAll, ts] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor1D, tf.Tensor1D];
        const [gLoss, gCe] = tf.unstack(dy) as tf.Scalar[];
        const gSum = tf.add(gLoss, gCe);
        let dW: tf.Tensor2D | undefined;
        const dhParts: tf.Tensor2D[] = [];
        for (const [a, b] of parts) {
          const r = tf.tidy(() => {
            const hc = hs.slice([a, 0], [b - a, -1]) as tf.Tensor2D;
            const lc = lseAll.slice([a], [b - a]).reshape([-1, 1]);
            const softmax = tf.exp(tf.sub(matmul(hc, ws, false, true), lc)); // [rows, V], recomputed
            // Per-row weight of the softmax: the cross-entropy part plus the z-loss part.
            const rowCoef = zLoss > 0 ? tf.add(gSum, tf.mul(tf.mul(gLoss, 2 * zLoss), lc)) : gSum;
            const dLogits = tf.div(tf.sub(tf.mul(softmax, rowCoef), tf.mul(tf.oneHot(ts.slice([a], [b - a]), V), gSum)), N) as tf.Tensor2D;
            return { dh: matmul(dLogits, ws) as tf.Tensor2D, dWc: matmul(dLogits, hc, true, false) as tf.Tensor2D };
          });
          dhParts.push(r.dh);
          dW = accumulate(dW, r.dWc, tf.add);
        }
        return [tf.concat(dhParts), dW!];
      },
    };
  };
  const run = tf.customGrad(fn as unknown as Parameters<typeof tf.customGrad>[0]);
  return run(h, W) as tf.Tensor1D;
}
