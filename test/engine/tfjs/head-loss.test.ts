// The chunked head loss against (1) the whole-logits loss under TensorFlow.js autodiff and (2) an independent
// float64 computation of the loss and its gradients written out by hand.
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../../src/backend';
import { chunkedCrossEntropy, headLoss, lossFromLogits } from '../../../src/engine/tfjs/head-loss';

beforeAll(async () => {
  await initBackend('wasm');
});

/** Deterministic values in [-scale, scale) from a small LCG, so the float64 reference sees the same numbers. */
function values(n: number, seed: number, scale: number): Float32Array {
  const out = new Float32Array(n);
  let x = seed >>> 0;
  for (let i = 0; i < n; i++) {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    out[i] = ((x / 2 ** 32) * 2 - 1) * scale;
  }
  return out;
}

/** loss = mean(lse - logit[t]) + z mean(lse^2) and its gradients dL/dh [N*d], dL/dW [V*d], in float64. */
function reference(h: Float32Array, W: Float32Array, t: Int32Array, N: number, d: number, V: number, z: number) {
  const dh = new Float64Array(N * d);
  const dW = new Float64Array(V * d);
  let ce = 0;
  let zsum = 0;
  for (let i = 0; i < N; i++) {
    const logits = new Float64Array(V);
    for (let v = 0; v < V; v++) for (let k = 0; k < d; k++) logits[v] += h[i * d + k] * W[v * d + k];
    const m = Math.max(...logits);
    const lse = m + Math.log(logits.reduce((s, l) => s + Math.exp(l - m), 0));
    ce += lse - logits[t[i]];
    zsum += lse * lse;
    for (let v = 0; v < V; v++) {
      const p = Math.exp(logits[v] - lse);
      const g = (p - (v === t[i] ? 1 : 0) + 2 * z * lse * p) / N;
      for (let k = 0; k < d; k++) {
        dh[i * d + k] += g * W[v * d + k];
        dW[v * d + k] += g * h[i * d + k];
      }
    }
  }
  return { loss: ce / N + (z * zsum) / N, ce: ce / N, dh, dW };
}

function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < a.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return num / den;
}

describe('chunked head cross-entropy', () => {
  const [B, T, d, V] = [2, 7, 8, 37]; // N = 14 rows: chunks of 4 leave a remainder of 2
  const hHost = values(B * T * d, 1, 1.5);
  const wHost = values(V * d, 2, 1.0);
  const tHost = Int32Array.from(values(B * T, 3, 1), (x) => Math.floor((x + 1) * 0.5 * V) % V);

  for (const z of [0, 1e-2]) {
    for (const rows of [1, 4, 14, 100]) {
      test(`z-loss ${z}, ${rows} rows per chunk: loss and gradients match float64 (1e-5) and whole-logits autodiff`, () => {
        const ref = reference(hHost, wHost, tHost, B * T, d, V, z);
        tf.tidy(() => {
          const h = tf.tensor3d(hHost, [B, T, d]);
          const W = tf.tensor2d(wHost, [V, d]);
          const targets = tf.tensor2d(tHost, [B, T], 'int32');
          const chunked = (hh: tf.Tensor, ww: tf.Tensor) => tf.unstack(chunkedCrossEntropy(hh.reshape([-1, d]) as tf.Tensor2D, ww as tf.Tensor2D, targets.reshape([-1]) as tf.Tensor1D, z, rows))[0];
          const whole = (hh: tf.Tensor, ww: tf.Tensor) => lossFromLogits(tf.matMul(hh.reshape([-1, d]), ww, false, true).reshape([B, T, V]) as tf.Tensor3D, targets, z).loss;
          const a = tf.valueAndGrads(chunked)([h, W]);
          const b = tf.valueAndGrads(whole)([h, W]);
          expect(Math.abs(a.value.dataSync()[0] - ref.loss) / ref.loss).toBeLessThan(1e-5);
          expect(maxRelErr(a.grads[0].dataSync(), ref.dh)).toBeLessThan(1e-5);
          expect(maxRelErr(a.grads[1].dataSync(), ref.dW)).toBeLessThan(1e-5);
          expect(maxRelErr(a.grads[0].dataSync(), b.grads[0].dataSync())).toBeLessThan(1e-5);
          expect(maxRelErr(a.grads[1].dataSync(), b.grads[1].dataSync())).toBeLessThan(1e-5);
          // The second output is the plain cross-entropy, whatever the z-loss.
          const both = chunkedCrossEntropy(h.reshape([-1, d]) as tf.Tensor2D, W, targets.reshape([-1]) as tf.Tensor1D, z, rows).dataSync();
          expect(Math.abs(both[1] - ref.ce) / ref.ce).toBeLessThan(1e-5);
        });
      });
    }
  }

  test('headLoss takes the whole-logits path under its budget (bit-identical) and chunks above it', () => {
    tf.tidy(() => {
      const h = tf.tensor3d(hHost, [B, T, d]);
      const W = tf.tensor2d(wHost, [V, d]);
      const targets = tf.tensor2d(tHost, [B, T], 'int32');
      const whole = lossFromLogits(tf.matMul(h.reshape([-1, d]), W, false, true).reshape([B, T, V]) as tf.Tensor3D, targets, 0.01);
      const under = headLoss(h, W, targets, 0.01, B * T * V * 4);
      expect(under.loss.dataSync()[0]).toBe(whole.loss.dataSync()[0]);
      const over = headLoss(h, W, targets, 0.01, 4 * V * 4); // 4 rows of logits at a time
      expect(Math.abs(over.loss.dataSync()[0] - whole.loss.dataSync()[0])).toBeLessThan(1e-5);
      expect(Math.abs(over.ce.dataSync()[0] - whole.ce.dataSync()[0])).toBeLessThan(1e-5);
    });
  });

  test('no tensors survive a gradient computation through the chunked path', () => {
    const h = tf.variable(tf.tensor3d(hHost, [B, T, d]));
    const W = tf.variable(tf.tensor2d(wHost, [V, d]));
    const targets = tf.tensor2d(tHost, [B, T], 'int32');
    const step = () => {
      const { value, grads } = tf.variableGrads(() => headLoss(h, W, targets, 0.01, 4 * V * 4).loss, [h, W]);
      tf.dispose([value, ...Object.values(grads)]);
    };
    step();
    const before = tf.memory().numTensors;
    step();
    step();
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose([h, W, targets]);
  });
});
