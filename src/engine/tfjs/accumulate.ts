import * as tf from '@tensorflow/tfjs';

/**
 * Running `op` over tensors that arrive one at a time (micro-batch losses, per-head maxima, a chunk's gradient):
 * returns `next` on the first call, else op(prev, next), freeing both inputs so only the running value stays.
 */
export function accumulate<T extends tf.Tensor>(prev: T | undefined, next: T, op: (a: T, b: T) => tf.Tensor): T {
  if (!prev) return next;
  const out = op(prev, next) as T;
  tf.dispose([prev, next]);
  return out;
}
