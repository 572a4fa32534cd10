import * as tf from '@tensorflow/tfjs';
import { RopeTables } from '../../src/model/layers';
import { disposeParams } from '../../src/model/params';
import { cacheNumbersPerToken } from '../../src/model/spec';
import { forward, IncrementalDecoder } from '../../src/model/transformer';
import { randomParams, randomTokens, tinySpec } from '../helpers';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

describe('latent+invrms cache layout (QK-Normed MLA)', () => {
  test.each([1, 2, 4])('holds exactly dc + dr + G numbers per token per layer and no full key (G=%i)', (G) => {
    const s = tinySpec({ variant: 'qk-norm', G });
    const P = randomParams(s, 5);
    const rope = new RopeTables(s.dr, s.maxSeqLen, s.ropeTheta, [0, s.dn]);
    const dec = new IncrementalDecoder(P, s, rope, 'latent+invrms');
    const B = 3;
    tf.dispose(dec.feed(tf.tensor2d([randomTokens(5, s.vocab, 1), randomTokens(5, s.vocab, 2), randomTokens(5, s.vocab, 3)], [B, 5], 'int32')));
    tf.dispose(dec.feed(tf.tensor2d([[1], [2], [3]], [B, 1], 'int32')));
    for (let l = 0; l < s.L; l++) {
      // Exactly the latent, the rotated shared key and one inverse RMS per group: nothing sized by heads.
      expect(dec.cacheShapes(l)).toEqual({ c: [B, 6, s.dc], kpr: [B, 6, s.dr], rk: [B, 6, G] });
      expect(dec.storedNumbersPerToken(l)).toBe(s.dc + s.dr + G);
    }
    expect(cacheNumbersPerToken(s, 'latent+invrms')).toBe(s.dc + s.dr + G);
    expect(cacheNumbersPerToken(s, 'latent')).toBe(s.dc + s.dr);
    expect(cacheNumbersPerToken(s, 'full-key')).toBe(s.H * (s.dn + s.dr) + s.dc);
    dec.dispose();
    disposeParams(P);
    rope.dispose();
  });

  test('a cache kind that cannot serve the variant is refused', () => {
    const s = tinySpec({ variant: 'qk-norm' });
    const rope = new RopeTables(s.dr, s.maxSeqLen, s.ropeTheta, [0, s.dn]);
    expect(() => new IncrementalDecoder({}, s, rope, 'latent')).toThrow(/latent\+invrms/);
    expect(() => new IncrementalDecoder({}, tinySpec(), rope, 'latent+invrms')).toThrow(/does not serve/);
    rope.dispose();
  });
});

describe('no tensor leaks', () => {
  test('repeated forward passes and decode steps keep tf.memory().numTensors constant', () => {
    const s = tinySpec({ variant: 'qk-norm', G: 2, dq: 8 });
    const P = randomParams(s, 7);
    const rope = new RopeTables(s.dr, s.maxSeqLen, s.ropeTheta, [0, s.dn]);
    const tokens = tf.tensor2d([randomTokens(8, s.vocab, 4)], [1, 8], 'int32');
    const runForward = () => tf.tidy(() => { forward(P, s, rope, tokens, true); });
    runForward();
    const afterWarmup = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) runForward();
    expect(tf.memory().numTensors).toBe(afterWarmup);

    for (const kind of ['latent+invrms', 'full-key'] as const) {
      const dec = new IncrementalDecoder(P, s, rope, kind);
      const before = tf.memory().numTensors;
      const step = (t: number) => { const x = tf.tensor2d([[t]], [1, 1], 'int32'); tf.dispose([dec.feed(x), x]); };
      step(1);
      const warm = tf.memory().numTensors; // the cache tensors now exist; their count must not grow with length
      for (let t = 2; t < 8; t++) step(t);
      expect(tf.memory().numTensors).toBe(warm);
      dec.dispose();
      expect(tf.memory().numTensors).toBe(before);
    }
    tokens.dispose();
    disposeParams(P);
    rope.dispose();
  });
});
