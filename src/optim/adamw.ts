// AdamW (Loshchilov & Hutter) as a pure update: tensors in, new tensors out, nothing mutated.
import * as tf from '@tensorflow/tfjs';

export interface AdamWHyper {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  /** Decoupled decay rate; the caller passes 0 for parameters its group exempts (norm gains). */
  weightDecay: number;
}

export interface AdamWResult {
  p: tf.Tensor;
  m: tf.Tensor;
  v: tf.Tensor;
}

/**
 * One AdamW step for one parameter. `step` is 1-based (the count including this step), which is what the
 * bias corrections 1 - beta^step need. The caller owns the returned tensors.
 *
 *   m' = b1 m + (1 - b1) g
 *   v' = b2 v + (1 - b2) g^2
 *   p' = p (1 - lr wd) - lr * (m' / (1 - b1^t)) / (sqrt(v' / (1 - b2^t)) + eps)
 */
export function adamwStep(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, v: tf.Tensor, step: number, hp: AdamWHyper): AdamWResult {
  if (!Number.isInteger(step) || step < 1) throw new Error(`adamwStep: step must be a 1-based integer, got ${step}`);
  // Bias corrections in float64 on the host: beta2^t for beta2 = 0.999 loses digits in float32 late in a run.
  const biasCorrection1 = 1 - Math.pow(hp.beta1, step);
  const biasCorrection2 = 1 - Math.pow(hp.beta2, step);
  const stepSize = hp.lr / biasCorrection1;
  const sqrtBiasCorrection2 = Math.sqrt(biasCorrection2);
  return tf.tidy(() => {
    const mNext = tf.add(tf.mul(m, hp.beta1), tf.mul(g, 1 - hp.beta1));
    const vNext = tf.add(tf.mul(v, hp.beta2), tf.mul(tf.square(g), 1 - hp.beta2));
    // eps is added to the corrected sqrt(v) (PyTorch's placement), so it means the same at every step.
    const denominator = tf.add(tf.div(tf.sqrt(vNext), sqrtBiasCorrection2), hp.eps);
    // Decoupled decay shrinks the pre-step weights; it never passes through the adaptive denominator.
    const decayed = hp.weightDecay === 0 ? p : tf.mul(p, 1 - hp.lr * hp.weightDecay);
    const pNext = tf.sub(decayed, tf.mul(tf.div(mNext, denominator), stepSize));
    return { p: pNext, m: mNext, v: vNext };
  });
}
