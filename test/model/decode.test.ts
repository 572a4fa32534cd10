// The one decode path (src/model/decode.ts) against the training form of the same layer: prefill blocks, then
// single-token steps, for every cache a variant has. Appends come in blocks of several sizes, so positions must
// continue across blocks and the causal mask must hold inside a block.
import * as tf from '@tensorflow/tfjs';
import { attentionTrainingForm } from '../../src/model/attention';
import {
  absorbedDecodeStep,
  appendTokens,
  disposeDecodeLayer,
  disposeFixedCache,
  fixedCacheShapes,
  fixedCacheTensors,
  latentCacheRows,
  prepareDecodeLayer,
  type FixedCache,
} from '../../src/model/decode';
import { RopeTables } from '../../src/model/layers';
import { disposeParams } from '../../src/model/params';
import { maxRelativeError } from '../../src/model/reference';
import type { CacheKind, ModelSpec } from '../../src/model/spec';
import { cachesFor } from '../../src/model/variants';
import { randomParams, tinySpec } from '../helpers';

const TOL = 1e-5;
const PRE = 'model.layers.0.self_attn.';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

const cases: [string, Partial<ModelSpec>][] = [
  ['baseline', { variant: 'baseline' }],
  ['baseline q-lora', { variant: 'baseline', dq: 10 }],
  ['qk-norm full G=H', { variant: 'qk-norm', scope: 'full', G: 4 }],
  ['qk-norm full G=2 q-lora', { variant: 'qk-norm', scope: 'full', G: 2, dq: 10 }],
  ['qk-norm full G=1', { variant: 'qk-norm', scope: 'full', G: 1 }],
  ['qk-norm nope G=2', { variant: 'qk-norm', scope: 'nope', G: 2 }],
  ['qk-norm nope G=1 q-lora', { variant: 'qk-norm', scope: 'nope', G: 1, dq: 10 }],
];

/** Blocks of new tokens fed in turn: a prefill of 4, a block of 3, then one token at a time. */
const BLOCKS = [4, 3, 1, 1, 1, 1];

describe.each(cases)('%s', (_name, over) => {
  const s = tinySpec({ ...over, L: 1 });
  test.each(cachesFor(s))('cache %s: prefill blocks and steps equal the training form', (kind: CacheKind) => {
    const P = randomParams(s, 4);
    const rope = new RopeTables(s.dr, s.maxSeqLen, s.ropeTheta, [0, s.dn]);
    const layer = prepareDecodeLayer(P, PRE, s);
    const B = 2;
    const S = BLOCKS.reduce((a, b) => a + b);
    const x = tf.randomNormal([B, S, s.d], 0, 1, 'float32', 9) as tf.Tensor3D;
    const want = tf.tidy(() => attentionTrainingForm(x, P, PRE, s, rope, false).out); // [B, S, d]

    let cache: FixedCache | undefined;
    const outs: tf.Tensor[] = [];
    let start = 0;
    for (const n of BLOCKS) {
      const xb = x.slice([0, start, 0], [B, n, -1]);
      const next = tf.tidy(() => {
        const grown = appendTokens(kind, layer, cache, xb, rope);
        fixedCacheTensors(grown).forEach((t) => tf.keep(t));
        return grown;
      });
      if (cache) disposeFixedCache(cache);
      cache = next;
      outs.push(tf.tidy(() => absorbedDecodeStep(layer, xb, next, rope)));
      xb.dispose();
      start += n;
    }
    const got = tf.concat(outs, 1);
    expect(maxRelativeError(got.dataSync(), want.dataSync())).toBeLessThan(TOL);

    const shapes = fixedCacheShapes(cache!);
    if (kind === 'full-key') expect(shapes).toEqual({ c: [B, S, s.dc], k: [B, s.H, S, s.dn + s.dr] });
    else expect(shapes).toEqual({ c: [B, S, s.dc], kpr: [B, S, s.dr], ...(kind === 'latent+invrms' ? { rk: [B, S, s.G] } : {}) });

    // No tensor survives a step.
    const last = x.slice([0, S - 1, 0], [B, 1, -1]);
    const before = tf.memory().numTensors;
    tf.dispose(tf.tidy(() => absorbedDecodeStep(layer, last, cache!, rope)));
    expect(tf.memory().numTensors).toBe(before);

    tf.dispose([want, got, x, last, ...outs]);
    disposeFixedCache(cache!);
    disposeDecodeLayer(layer);
    disposeParams(P);
    rope.dispose();
  });
});

test('a cache kind that does not serve the variant is refused', () => {
  const s = tinySpec({ variant: 'qk-norm', L: 1 });
  const P = randomParams(s, 4);
  const rope = new RopeTables(s.dr, s.maxSeqLen, s.ropeTheta, [0, s.dn]);
  const layer = prepareDecodeLayer(P, PRE, s);
  const c = tf.zeros([1, 3, s.dc]) as tf.Tensor3D;
  const kp = tf.zeros([1, 3, s.dr]) as tf.Tensor3D;
  expect(() => tf.tidy(() => latentCacheRows('latent', layer, c, kp, 0, rope))).toThrow(/latent\+invrms/);
  const cache: FixedCache = { kind: 'latent', c: [tf.zeros([3, s.dc]) as tf.Tensor2D], kpr: [tf.zeros([3, s.dr]) as tf.Tensor2D] };
  expect(() => tf.tidy(() => absorbedDecodeStep(layer, tf.zeros([1, 1, s.d]) as tf.Tensor3D, cache, rope))).toThrow(/latent\+invrms/);
  tf.dispose([c, kp]);
  disposeFixedCache(cache);
  disposeDecodeLayer(layer);
  disposeParams(P);
  rope.dispose();
});
