import * as tf from '@tensorflow/tfjs';
import { RopeTables } from '../../src/model/layers';
import { disposeParams } from '../../src/model/params';
import { forward } from '../../src/model/transformer';
import { applyQkClip, planQkClip } from '../../src/optim/qkclip';
import { randomParams, randomTokens, tinySpec } from '../helpers';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

test('plan: eta^alpha on content query rows, eta on positional query rows, eta^(1-alpha) on content key rows', () => {
  const s = tinySpec({ L: 1, H: 2, dn: 2, dr: 2, dv: 3 });
  const plan = planQkClip(s, [[400, 50]], { tau: 100, alpha: 0.5 });
  // head 0: eta = 0.25, sqrt = 0.5; head 1 untouched.
  expect(Array.from(plan.queryRows[0])).toEqual([0.5, 0.5, 0.25, 0.25, 1, 1, 1, 1]);
  expect(Array.from(plan.keyRows[0])).toEqual([0.5, 0.5, 1, 1, 1, 1, 1, 1, 1, 1]); // value rows (3) unchanged
  expect(plan.clipped).toEqual([1]);
  const skewed = planQkClip(s, [[200, 200]], { tau: 100, alpha: 1 });
  expect(Array.from(skewed.keyRows[0]).slice(0, 2)).toEqual([1, 1]); // alpha = 1 puts everything on the query
  expect(skewed.queryRows[0][0]).toBeCloseTo(0.5, 7);
});

test.each([0, 8])('after clipping, each clipped head\'s max logit on the same batch equals tau (q_lora_rank=%i)', (dq) => {
  const s = tinySpec({ variant: 'qk-clip', dq, initStd: 0.9 });
  const P = randomParams(s, 4);
  const rope = new RopeTables(s.dr, s.maxSeqLen, s.ropeTheta, [0, s.dn]);
  const tokens = tf.tensor2d([randomTokens(12, s.vocab, 5)], [1, 12], 'int32');
  const maxOf = () => tf.tidy(() => forward(P, s, rope, tokens, true).maxLogits!.arraySync());
  const before = maxOf();
  const tau = Math.min(...before.flat()) * 1.05; // most heads above tau, at least one below
  expect(before.flat().some((v) => v > tau)).toBe(true);
  const n = applyQkClip(P, s, planQkClip(s, before, { tau, alpha: 0.5 }));
  expect(n).toBe(before.flat().filter((v) => v > tau).length);
  // Only layer 0's input is unchanged by the clip (later layers see a changed residual stream).
  const after = maxOf();
  before[0].forEach((v, h) => {
    if (v > tau) expect(after[0][h]).toBeCloseTo(tau, 3);
    else expect(after[0][h]).toBeCloseTo(v, 5);
  });
  tokens.dispose();
  disposeParams(P);
  rope.dispose();
});
