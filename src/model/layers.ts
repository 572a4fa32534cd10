import * as tf from '@tensorflow/tfjs';

/** y = x W^T for a weight in PyTorch `[out, in]` layout. Works on any leading shape. */
export function linear(x: tf.Tensor, w: tf.Tensor): tf.Tensor {
  const inDim = x.shape[x.shape.length - 1];
  const lead = x.shape.slice(0, -1);
  const y = tf.matMul(x.reshape([-1, inDim]) as tf.Tensor2D, w as tf.Tensor2D, false, true); // [N, out]
  return y.reshape([...lead, w.shape[0]]);
}

/** RMSNorm over the last axis: w ⊙ x / sqrt(mean(x^2) + eps). */
export function rmsNorm(x: tf.Tensor, w: tf.Tensor, eps: number): tf.Tensor {
  return tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), eps))), w);
}

/** SwiGLU MLP: down( silu(gate x) ⊙ up x ). */
export function swiglu(x: tf.Tensor, gate: tf.Tensor, up: tf.Tensor, down: tf.Tensor): tf.Tensor {
  const g = linear(x, gate);
  return linear(tf.mul(tf.mul(g, tf.sigmoid(g)), linear(x, up)), down);
}

/**
 * RoPE tables for adjacent pairs (2i, 2i+1) of the positional slice, frequency theta^(-2i/dr). Computed in float64
 * and rounded once, so long positions do not accumulate float32 error.
 */
export class RopeTables {
  readonly cos: tf.Tensor2D; // [maxLen, dr/2]
  readonly sin: tf.Tensor2D; // [maxLen, dr/2]

  constructor(readonly dr: number, readonly maxLen: number, theta: number) {
    const half = dr / 2;
    const c = new Float32Array(maxLen * half);
    const s = new Float32Array(maxLen * half);
    for (let t = 0; t < maxLen; t++) {
      for (let i = 0; i < half; i++) {
        const angle = t * Math.pow(theta, (-2 * i) / dr);
        c[t * half + i] = Math.cos(angle);
        s[t * half + i] = Math.sin(angle);
      }
    }
    this.cos = tf.keep(tf.tensor2d(c, [maxLen, half]));
    this.sin = tf.keep(tf.tensor2d(s, [maxLen, half]));
  }

  /** Rotate x [..., n, dr] whose rows sit at positions start..start+n-1. */
  apply(x: tf.Tensor, start: number): tf.Tensor {
    const n = x.shape[x.shape.length - 2];
    if (start + n > this.maxLen) throw new Error(`RoPE: position ${start + n - 1} beyond max_seq_len ${this.maxLen}`);
    const half = this.dr / 2;
    const lead = x.shape.slice(0, -1);
    const pairs = x.reshape([...lead, half, 2]); // [..., n, dr/2, 2]
    const [x0, x1] = tf.split(pairs, 2, -1).map((t) => t.reshape([...lead, half])); // [..., n, dr/2] each
    const cos = this.cos.slice([start, 0], [n, half]);
    const sin = this.sin.slice([start, 0], [n, half]);
    const r0 = tf.sub(tf.mul(x0, cos), tf.mul(x1, sin));
    const r1 = tf.add(tf.mul(x0, sin), tf.mul(x1, cos));
    return tf.stack([r0, r1], -1).reshape(x.shape); // back to interleaved pairs
  }

  dispose(): void {
    this.cos.dispose();
    this.sin.dispose();
  }
}

/** Additive causal mask [n, S] for n new queries at positions S-n..S-1 over S keys: 0 allowed, -1e9 masked. */
export function causalMask(n: number, S: number): tf.Tensor2D {
  const m = new Float32Array(n * S);
  const offset = S - n;
  for (let i = 0; i < n; i++) for (let j = offset + i + 1; j < S; j++) m[i * S + j] = -1e9;
  return tf.tensor2d(m, [n, S]);
}
