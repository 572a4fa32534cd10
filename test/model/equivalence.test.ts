import * as tf from '@tensorflow/tfjs';
import { RopeTables } from '../../src/model/layers';
import { disposeParams } from '../../src/model/params';
import { maxRelativeError, referenceForward } from '../../src/model/reference';
import type { ModelSpec } from '../../src/model/spec';
import { cachesFor } from '../../src/model/variants';
import { forward, IncrementalDecoder } from '../../src/model/transformer';
import { randomParams, randomTokens, tinySpec, toRefWeights } from '../helpers';

// Tolerance of the contract (design note §4): float32 logits within 1e-5 relative (max-abs over max-abs) of float64.
const TOL = 1e-5;

const cases: [string, Partial<ModelSpec>][] = [
  ['baseline', { variant: 'baseline' }],
  ['baseline q-lora', { variant: 'baseline', dq: 10 }],
  ['qk-clip', { variant: 'qk-clip' }],
  ['qk-norm full G=H', { variant: 'qk-norm', scope: 'full', G: 4 }],
  ['qk-norm full G=2', { variant: 'qk-norm', scope: 'full', G: 2 }],
  ['qk-norm full G=1 q-lora', { variant: 'qk-norm', scope: 'full', G: 1, dq: 10 }],
  ['qk-norm nope G=H', { variant: 'qk-norm', scope: 'nope', G: 4 }],
  ['qk-norm nope G=2 q-lora', { variant: 'qk-norm', scope: 'nope', G: 2, dq: 10 }],
  ['qk-norm nope G=1', { variant: 'qk-norm', scope: 'nope', G: 1 }],
];

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe.each(cases)('%s', (_name, over) => {
  const s = tinySpec(over);
  const B = 2;
  const T = 9;
  const seqs = [randomTokens(T, s.vocab, 11), randomTokens(T, s.vocab, 29)];
  let P: Record<string, tf.Variable>;
  let rope: RopeTables;
  let ref: number[][][];
  let refMax: number[][][];

  beforeAll(() => {
    P = randomParams(s, 3);
    rope = new RopeTables(s.dr, s.maxSeqLen, s.ropeTheta, [0, s.dn]);
    const W = toRefWeights(P);
    const outs = seqs.map((q) => referenceForward(W, s, q));
    ref = outs.map((o) => o.logits);
    refMax = outs.map((o) => o.maxLogits);
  });
  afterAll(() => {
    disposeParams(P);
    rope.dispose();
  });

  const flatRef = (b: number, from: number, to: number) => ref[b].slice(from, to).flat();

  test('training form matches the float64 reference', () => {
    const { logits, maxLogits } = tf.tidy(() => forward(P, s, rope, tf.tensor2d(seqs, [B, T], 'int32'), true));
    const got = logits.arraySync() as number[][][];
    const gotMax = maxLogits!.arraySync();
    tf.dispose([logits, maxLogits!]);
    for (let b = 0; b < B; b++) expect(maxRelativeError(got[b].flat(), flatRef(b, 0, T))).toBeLessThan(TOL);
    // S_h is a max over the batch too (§5).
    const want = refMax[0].map((row, l) => row.map((v, h) => Math.max(v, refMax[1][l][h])));
    expect(maxRelativeError(gotMax.flat(), want.flat())).toBeLessThan(TOL);
  });

  test.each(cachesFor(s))('decode cache %s (prefill 4, then one token at a time) matches the reference', (kind) => {
    const dec = new IncrementalDecoder(P, s, rope, kind);
    const prefill = dec.feed(tf.tensor2d(seqs.map((q) => q.slice(0, 4)), [B, 4], 'int32'));
    const pre = prefill.arraySync() as number[][][];
    prefill.dispose();
    for (let b = 0; b < B; b++) expect(maxRelativeError(pre[b].flat(), flatRef(b, 0, 4))).toBeLessThan(TOL);
    for (let t = 4; t < T; t++) {
      const step = dec.feed(tf.tensor2d(seqs.map((q) => [q[t]]), [B, 1], 'int32'));
      const got = step.arraySync() as number[][][];
      step.dispose();
      for (let b = 0; b < B; b++) expect(maxRelativeError(got[b][0], ref[b][t])).toBeLessThan(TOL);
    }
    expect(dec.storedNumbersPerToken()).toBe(dec.expectedNumbersPerToken());
    dec.dispose();
  });
});
