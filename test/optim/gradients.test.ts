import * as tf from '@tensorflow/tfjs';
import { clipByGlobalNorm, globalNorm } from '../../src/optim/gradients';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

// Norm 13 by hand: sqrt(3^2 + 4^2 + 12^2) = sqrt(169).
const makeGrads = (): tf.Tensor[] => [tf.tensor1d([3, 4]), tf.tensor2d([[12]])];

describe('globalNorm', () => {
  it('is the 2-norm over all tensors together', () => {
    const grads = makeGrads();
    const norm = globalNorm(grads);
    expect(norm.rank).toBe(0);
    expect(norm.dataSync()[0]).toBeCloseTo(13, 5);
    tf.dispose([...grads, norm]);
  });

  it('is 0 for no tensors', () => {
    const norm = globalNorm([]);
    expect(norm.dataSync()[0]).toBe(0);
    norm.dispose();
  });
});

describe('clipByGlobalNorm', () => {
  it('scales by maxNorm / (norm + 1e-6) when the norm is above maxNorm', () => {
    const grads = makeGrads();
    const out = clipByGlobalNorm(grads, 6.5);
    const scale = 6.5 / (13 + 1e-6);
    expect(out.norm.dataSync()[0]).toBeCloseTo(13, 5);
    expect(out.grads[0].dataSync()[0]).toBeCloseTo(3 * scale, 6);
    expect(out.grads[0].dataSync()[1]).toBeCloseTo(4 * scale, 6);
    expect(out.grads[1].dataSync()[0]).toBeCloseTo(12 * scale, 6);
    expect(out.grads[1].shape).toEqual([1, 1]);
    const clippedNorm = globalNorm(out.grads);
    expect(clippedNorm.dataSync()[0]).toBeCloseTo(6.5, 5);
    tf.dispose([...grads, ...out.grads, out.norm, clippedNorm]);
  });

  it('leaves gradients exactly as they are when the norm is below maxNorm or maxNorm <= 0', () => {
    for (const maxNorm of [100, 0, -1]) {
      const grads = makeGrads();
      const out = clipByGlobalNorm(grads, maxNorm);
      expect(Array.from(out.grads[0].dataSync())).toEqual([3, 4]);
      expect(Array.from(out.grads[1].dataSync())).toEqual([12]);
      expect(out.norm.dataSync()[0]).toBeCloseTo(13, 5);
      // Outputs are owned by the caller: disposing inputs must not invalidate them.
      tf.dispose(grads);
      expect(Array.from(out.grads[0].dataSync())).toEqual([3, 4]);
      tf.dispose([...out.grads, out.norm]);
    }
  });

  it('keeps all-zero gradients finite', () => {
    const grads = [tf.zeros([3])];
    const out = clipByGlobalNorm(grads, 1);
    expect(Array.from(out.grads[0].dataSync())).toEqual([0, 0, 0]);
    tf.dispose([...grads, ...out.grads, out.norm]);
  });

  it('creates exactly its outputs', () => {
    const grads = makeGrads();
    const before = tf.memory().numTensors;
    const out = clipByGlobalNorm(grads, 1);
    expect(tf.memory().numTensors).toBe(before + grads.length + 1);
    tf.dispose([...out.grads, out.norm]);
    expect(tf.memory().numTensors).toBe(before);
    tf.dispose(grads);
  });
});
