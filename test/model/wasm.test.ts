import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/backend';
import { RopeTables } from '../../src/model/layers';
import { disposeParams } from '../../src/model/params';
import { maxRelativeError, referenceForward } from '../../src/model/reference';
import { forward, IncrementalDecoder } from '../../src/model/transformer';
import { randomParams, randomTokens, tinySpec, toRefWeights } from '../helpers';

// The default CPU backend has its own kernels (and our UnsortedSegmentSum): the contract must hold there too.
beforeAll(async () => {
  expect((await initBackend('wasm')).name).toBe('wasm');
});

test('wasm: training form and latent+invrms decode match the float64 reference (qk-norm, G=2, query low-rank)', () => {
  const s = tinySpec({ variant: 'qk-norm', G: 2, dq: 10 });
  const P = randomParams(s, 9);
  const rope = new RopeTables(s.dr, s.maxSeqLen, s.ropeTheta, [0, s.dn]);
  const seq = randomTokens(7, s.vocab, 3);
  const ref = referenceForward(toRefWeights(P), s, seq).logits;
  const logits = tf.tidy(() => forward(P, s, rope, tf.tensor2d([seq], [1, 7], 'int32')).logits);
  expect(maxRelativeError((logits.arraySync() as number[][][])[0].flat(), ref.flat())).toBeLessThan(1e-5);
  logits.dispose();
  const dec = new IncrementalDecoder(P, s, rope, 'latent+invrms');
  for (let t = 0; t < 7; t++) {
    const out = dec.feed(tf.tensor2d([[seq[t]]], [1, 1], 'int32'));
    expect(maxRelativeError((out.arraySync() as number[][][])[0][0], ref[t])).toBeLessThan(1e-5);
    out.dispose();
  }
  dec.dispose();
  disposeParams(P);
  rope.dispose();
});

test('wasm: the embedding gradient (UnsortedSegmentSum) sums rows of repeated tokens', () => {
  const table = tf.variable(tf.tensor2d([[1, 2], [3, 4], [5, 6]]));
  const ids = tf.tensor1d([2, 0, 2, 2], 'int32');
  const g = tf.grad((t: tf.Tensor) => tf.sum(tf.mul(tf.gather(t, ids), tf.tensor2d([[1, 10], [2, 20], [3, 30], [4, 40]]))))(table);
  // Row 2 is used at positions 0, 2, 3: its gradient is the sum of those upstream rows.
  expect(g.arraySync()).toEqual([[2, 20], [0, 0], [8, 80]]);
  tf.dispose([table, ids, g]);
});
