import * as tf from '@tensorflow/tfjs';

/** Swap the last two axes. */
function transposeLast2(t: tf.Tensor): tf.Tensor {
  const r = t.rank;
  return tf.transpose(t, [...Array.from({ length: r - 2 }, (_, i) => i), r - 1, r - 2]);
}

/**
 * A matmul whose forward and backward passes only use untransposed products. The wasm backend sends untransposed
 * products to XNNPACK (about 10 GFLOP/s here) but any transposeA/transposeB flag to a naive loop (under 1 GFLOP/s),
 * and matMul's own gradient always uses the flags. An explicit transpose is one cheap pass over a small operand.
 */
const plainMatMul = tf.customGrad(((a: tf.Tensor, b: tf.Tensor, save: tf.GradSaveFunc) => {
  save([a, b]);
  return {
    value: tf.matMul(a, b),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sa, sb] = saved;
      let da = tf.matMul(dy, transposeLast2(sb));
      let db = tf.matMul(transposeLast2(sa), dy);
      // Batch dimensions that were broadcast in the forward pass are summed back to the operand's shape.
      if (da.rank > sa.rank || !tf.util.arraysEqual(da.shape, sa.shape)) da = sumToShape(da, sa.shape);
      if (db.rank > sb.rank || !tf.util.arraysEqual(db.shape, sb.shape)) db = sumToShape(db, sb.shape);
      return [da, db];
    },
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]);

function sumToShape(t: tf.Tensor, shape: number[]): tf.Tensor {
  const axes: number[] = [];
  const offset = t.rank - shape.length;
  for (let i = 0; i < t.rank; i++) if (i < offset || (shape[i - offset] === 1 && t.shape[i] !== 1)) axes.push(i);
  return axes.length ? tf.sum(t, axes).reshape(shape) : t;
}

/** Backends whose transposed matmul kernels are much slower than an explicit transpose plus a plain product. */
function prefersExplicitTranspose(): boolean {
  const b = tf.getBackend();
  return b === 'wasm' || b === 'cpu';
}

/** tf.matMul with the transpose flags, routed to the fastest exact form for the active backend. */
export function matmul(a: tf.Tensor, b: tf.Tensor, transposeA = false, transposeB = false): tf.Tensor {
  if (!prefersExplicitTranspose()) return tf.matMul(a, b, transposeA, transposeB);
  return plainMatMul(transposeA ? transposeLast2(a) : a, transposeB ? transposeLast2(b) : b) as tf.Tensor;
}

/** y = x W^T for a weight in PyTorch `[out, in]` layout. Works on any leading shape. */
export function linear(x: tf.Tensor, w: tf.Tensor): tf.Tensor {
  const inDim = x.shape[x.shape.length - 1];
  const lead = x.shape.slice(0, -1);
  const y = matmul(x.reshape([-1, inDim]), w, false, true); // [N, out]
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
 * RoPE on adjacent pairs (2i, 2i+1) of the positional slice, frequency theta^(-2i/dr):
 *   rot(x) = x ⊙ cos + swap(x) ⊙ sin,   swap(x)_{2i} = -x_{2i+1},  swap(x)_{2i+1} = x_{2i}
 * with cos/sin repeated over each pair. `swap` is a product with a fixed signed permutation, which keeps the
 * whole rotation free of splits and stacks: the CPU backends copy a split along a last axis of size 2 one number
 * at a time (about 0.25 us each on wasm), and each split or stack adds a pass in the backward.
 * Tables are computed in float64 and rounded once, so long positions do not accumulate float32 error. They stay
 * on the host and each call uploads the rows it needs: slicing a backend table costs a copy of the whole table on
 * wasm (its Slice reads the source back), 8 MB per decode step at 16k positions.
 * The one RoPE of the model: training, prefill and decode all rotate through it.
 */
export class RopeTables {
  private readonly widened = new Map<number, { cos: Float32Array; sin: Float32Array; swap: tf.Tensor2D }>();

  /** `contentWidths`: the content widths rotateTail will see, built up front so no table appears mid-run. */
  constructor(readonly dr: number, readonly maxLen: number, readonly theta: number, contentWidths: number[] = [0]) {
    for (const w of contentWidths) this.tables(w);
  }

  /**
   * Tables [maxLen, skip+dr] for rows [content (skip) ; positional (dr)]: cos = 1 and sin = 0 on the first `skip`
   * features, so the rotation leaves them exactly unchanged. Built once per width and kept.
   */
  private tables(skip: number): { cos: Float32Array; sin: Float32Array; swap: tf.Tensor2D } {
    let t = this.widened.get(skip);
    if (!t) {
      const { dr, maxLen } = this;
      const w = skip + dr;
      const cos = new Float32Array(maxLen * w);
      const sin = new Float32Array(maxLen * w);
      for (let p = 0; p < maxLen; p++) {
        cos.fill(1, p * w, p * w + skip);
        for (let i = 0; i < dr / 2; i++) {
          const angle = p * Math.pow(this.theta, (-2 * i) / dr);
          cos[p * w + skip + 2 * i] = cos[p * w + skip + 2 * i + 1] = Math.cos(angle);
          sin[p * w + skip + 2 * i] = sin[p * w + skip + 2 * i + 1] = Math.sin(angle);
        }
      }
      const swap = new Float32Array(w * w); // row = input feature, column = output feature
      for (let i = skip; i < w; i += 2) {
        swap[(i + 1) * w + i] = -1; // out_{2i} = -x_{2i+1}
        swap[i * w + i + 1] = 1; // out_{2i+1} = x_{2i}
      }
      t = { cos, sin, swap: tf.keep(tf.tensor2d(swap, [w, w])) };
      this.widened.set(skip, t);
    }
    return t;
  }

  /** Rotate the last `dr` features of x [..., n, skip+dr] whose rows sit at positions start..start+n-1. */
  rotateTail(x: tf.Tensor, start: number, skip: number, weight?: RopeWeight): tf.Tensor {
    const n = x.shape[x.shape.length - 2];
    const w = x.shape[x.shape.length - 1];
    if (w !== skip + this.dr) throw new Error(`RoPE: rows of width ${w}, expected ${skip} + ${this.dr}`);
    if (start + n > this.maxLen) throw new Error(`RoPE: position ${start + n - 1} beyond max_seq_len ${this.maxLen}`);
    if (weight && skip !== 0) throw new Error('RoPE: a folded weight covers the positional features only (skip 0)');
    const t = this.tables(skip);
    let cos: tf.Tensor = tf.tensor2d(t.cos.subarray(start * w, (start + n) * w), [n, w]);
    let sin: tf.Tensor = tf.tensor2d(t.sin.subarray(start * w, (start + n) * w), [n, w]);
    if (weight) {
      // rot(x ⊙ g) = x ⊙ (g ⊙ cos) + swap(x) ⊙ (g' ⊙ sin), g' = g with each pair's members exchanged: the weight
      // costs two [n, dr] products instead of a pass over x.
      cos = tf.mul(cos, weight.w);
      sin = tf.mul(sin, weight.swapped);
    }
    const swapped = matmul(x.reshape([-1, w]), t.swap).reshape(x.shape);
    return tf.add(tf.mul(x, cos), tf.mul(swapped, sin));
  }

  /** Rotate x [..., n, dr] whose rows sit at positions start..start+n-1, after multiplying by `weight` if given. */
  apply(x: tf.Tensor, start: number, weight?: RopeWeight): tf.Tensor {
    return this.rotateTail(x, start, 0, weight);
  }

  dispose(): void {
    for (const t of this.widened.values()) t.swap.dispose();
    this.widened.clear();
  }
}

/** An elementwise weight g [dr] applied before RoPE, and g with the members of each pair exchanged. */
export interface RopeWeight {
  w: tf.Tensor1D;
  swapped: tf.Tensor1D;
}

/** The RopeWeight of g [dr]; the caller owns (keeps, disposes) both tensors. */
export function ropeWeight(g: tf.Tensor1D): RopeWeight {
  const dr = g.shape[0];
  return { w: g, swapped: tf.reverse(g.reshape([dr / 2, 2]), 1).reshape([dr]) as tf.Tensor1D };
}

/** Additive causal mask [n, S] for n new queries at positions S-n..S-1 over S keys: 0 allowed, -1e9 masked. */
export function causalMask(n: number, S: number): tf.Tensor2D {
  const m = new Float32Array(n * S);
  const offset = S - n;
  for (let i = 0; i < n; i++) for (let j = offset + i + 1; j < S; j++) m[i * S + j] = -1e9;
  return tf.tensor2d(m, [n, S]);
}
