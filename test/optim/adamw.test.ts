import * as tf from '@tensorflow/tfjs';
import { adamwStep } from '../../src/optim/adamw';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const hp = { lr: 0.1, beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0.1 };

/** Textbook AdamW in float64 on one scalar: bias-corrected moments, eps outside the sqrt, decoupled decay. */
function adamwReference(p0: number, grads: number[], h: typeof hp): { p: number; m: number; v: number } {
  let p = p0;
  let m = 0;
  let v = 0;
  grads.forEach((g, i) => {
    const t = i + 1;
    m = h.beta1 * m + (1 - h.beta1) * g;
    v = h.beta2 * v + (1 - h.beta2) * g * g;
    const mHat = m / (1 - h.beta1 ** t);
    const vHat = v / (1 - h.beta2 ** t);
    p = p * (1 - h.lr * h.weightDecay) - (h.lr * mHat) / (Math.sqrt(vHat) + h.eps);
  });
  return { p, m, v };
}

function expectClose(actual: ArrayLike<number>, expected: number[], tol: number): void {
  expect(actual.length).toBe(expected.length);
  for (let i = 0; i < expected.length; i++) {
    expect(Math.abs(actual[i] - expected[i])).toBeLessThanOrEqual(tol * Math.max(1, Math.abs(expected[i])));
  }
}

describe('adamwStep', () => {
  it('first step by hand: p=1, g=0.5 moves by lr (the bias-corrected ratio is 1) after decay', () => {
    const out = adamwStep(tf.tensor([1]), tf.tensor([0.5]), tf.zeros([1]), tf.zeros([1]), 1, hp);
    // m = 0.05, v = 0.00025; corrected: 0.5 and 0.25; update = 0.1 * 0.5 / (0.5 + 1e-8); decay factor 1 - 0.01.
    expectClose(out.p.dataSync(), [0.99 - (0.1 * 0.5) / (0.5 + 1e-8)], 1e-6);
    expectClose(out.m.dataSync(), [0.05], 1e-7);
    expectClose(out.v.dataSync(), [0.00025], 1e-7);
    tf.dispose([out.p, out.m, out.v]);
  });

  it('two steps on a 2x2 tensor match float64 arithmetic (including a zero gradient that only decays)', () => {
    const p0 = [0.5, -1.5, 2.0, 0.25];
    const g1 = [0.3, -0.2, 0.0, 1.5];
    const g2 = [-0.1, -0.4, 0.0, 0.5];
    let p: tf.Tensor = tf.tensor2d(p0, [2, 2]);
    let m = tf.zeros([2, 2]);
    let v = tf.zeros([2, 2]);
    for (const [i, g] of [g1, g2].entries()) {
      const gT = tf.tensor2d(g, [2, 2]);
      const out = adamwStep(p, gT, m, v, i + 1, hp);
      tf.dispose([p, m, v, gT]);
      ({ p, m, v } = out);
    }
    const expected = p0.map((x, j) => adamwReference(x, [g1[j], g2[j]], hp));
    expectClose(p.dataSync(), expected.map((e) => e.p), 2e-6);
    expectClose(m.dataSync(), expected.map((e) => e.m), 1e-6);
    expectClose(v.dataSync(), expected.map((e) => e.v), 1e-6);
    // Zero gradient: the entry is only decayed twice.
    expect(p.dataSync()[2]).toBeCloseTo(2.0 * 0.99 * 0.99, 6);
    // Second step is no longer a sign step: entry 0 had g = +0.3 then -0.1, so its net move is smaller than 2 lr.
    expect(Math.abs(p.dataSync()[0] - 0.5 * 0.99 * 0.99)).toBeLessThan(0.2);
    tf.dispose([p, m, v]);
  });

  it('weightDecay 0 leaves a zero-gradient parameter unchanged', () => {
    const out = adamwStep(tf.tensor([3]), tf.tensor([0]), tf.zeros([1]), tf.zeros([1]), 1, { ...hp, weightDecay: 0 });
    expect(out.p.dataSync()[0]).toBe(3);
    tf.dispose([out.p, out.m, out.v]);
  });

  it('does not mutate its inputs, rejects step 0 and keeps no temporaries', () => {
    const p = tf.tensor([1, 2]);
    const g = tf.tensor([0.5, -0.5]);
    const m = tf.zeros([2]);
    const v = tf.zeros([2]);
    expect(() => adamwStep(p, g, m, v, 0, hp)).toThrow(/1-based/);
    const before = tf.memory().numTensors;
    const out = adamwStep(p, g, m, v, 1, hp);
    expect(tf.memory().numTensors).toBe(before + 3);
    expect(Array.from(p.dataSync())).toEqual([1, 2]);
    expect(Array.from(m.dataSync())).toEqual([0, 0]);
    tf.dispose([out.p, out.m, out.v, p, g, m, v]);
  });
});
