// Gradient norm and clipping, kept as tensors so the training loop reads the norm back only when it logs.
import * as tf from '@tensorflow/tfjs';

/** sqrt(sum over all tensors of sum(g^2)); 0 for an empty list. */
export function globalNorm(grads: tf.Tensor[]): tf.Scalar {
  return tf.tidy(() => {
    if (grads.length === 0) return tf.scalar(0);
    // One scalar per tensor, gathered into a vector by concat (which every backend splits into legal pieces)
    // rather than addN: WebGPU binds at most 8 storage buffers per kernel, and a model has ~100 gradient tensors.
    const squaredSums = grads.map((g) => tf.sum(tf.square(g)).reshape([1]));
    return tf.sqrt(tf.sum(tf.concat(squaredSums))) as tf.Scalar;
  });
}

/**
 * Scales all gradients by min(1, maxNorm / (norm + 1e-6)) so their joint norm is at most maxNorm; maxNorm <= 0 turns
 * clipping off. `norm` is the norm before clipping. Every returned tensor is new and owned by the caller (unclipped
 * ones are clones), so the caller can dispose inputs and outputs alike.
 */
export function clipByGlobalNorm(grads: tf.Tensor[], maxNorm: number): { grads: tf.Tensor[]; norm: tf.Scalar } {
  return tf.tidy(() => {
    const norm = globalNorm(grads);
    if (!(maxNorm > 0)) return { grads: grads.map((g) => tf.clone(g)), norm };
    // The 1e-6 keeps the ratio finite for all-zero gradients; min(1, .) makes clipping only ever shrink.
    const scale = tf.minimum(1, tf.div(maxNorm, tf.add(norm, 1e-6)));
    return { grads: grads.map((g) => tf.mul(g, scale)), norm };
  });
}
