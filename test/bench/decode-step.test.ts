// The fused fixed-cache step (src/model/decode-step.ts) must compute exactly what the model's decode path
// (attentionDecode, itself tested against float64 in test/model) computes for the same tokens.
import * as tf from '@tensorflow/tfjs';
import { attentionDecode } from '../../src/model/attention';
import {
  absorbedDecodeStep,
  disposeDecodeLayer,
  disposeFixedCache,
  fullKeyCacheRows,
  latentCacheRows,
  latentOf,
  prepareDecodeLayer,
  type FixedCache,
} from '../../src/model/decode-step';
import { RopeTables } from '../../src/model/layers';
import { disposeParams } from '../../src/model/params';
import { maxRelativeError } from '../../src/model/reference';
import { cachesFor, type CacheKind, type ModelSpec } from '../../src/model/spec';
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

/** Build a fixed cache for hidden states x [B, S, d] the way an append would, in blocks of `block` tokens. */
function buildCache(kind: CacheKind, layer: ReturnType<typeof prepareDecodeLayer>, x: tf.Tensor3D, block: number): FixedCache {
  const [B, S] = x.shape;
  return tf.tidy(() => {
    const perSeq = Array.from({ length: B }, (_, b) => {
      const parts: { kpr?: tf.Tensor; rk?: tf.Tensor; keys?: tf.Tensor; c: tf.Tensor }[] = [];
      for (let start = 0; start < S; start += block) {
        const n = Math.min(block, S - start);
        const xb = x.slice([b, start, 0], [1, n, -1]).reshape([n, -1]) as tf.Tensor2D;
        const { c, kp } = latentOf(layer, xb);
        if (kind === 'full-key') parts.push({ keys: fullKeyCacheRows(layer, c, kp, start), c });
        else parts.push({ ...latentCacheRows(kind, layer, c, kp, start), c });
      }
      return parts;
    });
    const cat = (ts: tf.Tensor[], axis: number) => tf.keep(tf.concat(ts, axis)) as tf.Tensor2D;
    if (kind === 'full-key') {
      return {
        kind,
        keys: perSeq.map((parts) => tf.unstack(tf.concat(parts.map((p) => p.keys!), 1)).map((t) => tf.keep(t as tf.Tensor2D))),
        latent: perSeq.map((parts) => cat(parts.map((p) => p.c), 0)),
      };
    }
    return {
      kind,
      c: perSeq.map((parts) => cat(parts.map((p) => p.c), 0)),
      kpr: perSeq.map((parts) => cat(parts.map((p) => p.kpr!), 0)),
      rk: kind === 'latent+invrms' ? perSeq.map((parts) => cat(parts.map((p) => p.rk!), 0)) : undefined,
    };
  });
}

describe.each(cases)('%s', (_name, over) => {
  const s = tinySpec({ ...over, L: 1 });
  test.each(cachesFor(s))('cache %s: the fixed-cache step equals attentionDecode', (kind) => {
    const P = randomParams(s, 4);
    const rope = new RopeTables(s.dr, s.maxSeqLen, s.ropeTheta, [0, s.dn]);
    const layer = prepareDecodeLayer(P, PRE, s);
    const B = 2;
    const S = 11;
    const x = tf.randomNormal([B, S, s.d], 0, 1, 'float32', 9) as tf.Tensor3D;

    // Reference: prefill S-1 tokens, then one decode step for the last, through the model's own decode path.
    const want = tf.tidy(() => {
      const prefix = attentionDecode(kind, x.slice([0, 0, 0], [B, S - 1, -1]), P, PRE, s, rope, 0, {});
      return attentionDecode(kind, x.slice([0, S - 1, 0], [B, 1, -1]), P, PRE, s, rope, S - 1, prefix.cache).out.reshape([B, s.d]);
    });
    const cache = buildCache(kind, layer, x, 4); // blocks of 4: positions must continue across blocks
    const got = tf.tidy(() => absorbedDecodeStep(layer, x.slice([0, S - 1, 0], [B, 1, -1]).reshape([B, s.d]) as tf.Tensor2D, cache));
    expect(maxRelativeError(got.dataSync(), want.dataSync())).toBeLessThan(TOL);

    // No tensor survives a step.
    const before = tf.memory().numTensors;
    tf.dispose(tf.tidy(() => absorbedDecodeStep(layer, x.slice([0, S - 1, 0], [B, 1, -1]).reshape([B, s.d]) as tf.Tensor2D, cache)));
    expect(tf.memory().numTensors).toBe(before);

    tf.dispose([want, got, x]);
    disposeFixedCache(cache);
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
  const c = tf.zeros([3, s.dc]) as tf.Tensor2D;
  const kp = tf.zeros([3, s.dr]) as tf.Tensor2D;
  expect(() => tf.tidy(() => latentCacheRows('latent', layer, c, kp, 0))).toThrow(/latent\+invrms/);
  const cache: FixedCache = { kind: 'latent', c: [tf.zeros([3, s.dc]) as tf.Tensor2D], kpr: [tf.zeros([3, s.dr]) as tf.Tensor2D] };
  expect(() => tf.tidy(() => absorbedDecodeStep(layer, tf.zeros([1, s.d]) as tf.Tensor2D, cache))).toThrow(/latent\+invrms/);
  tf.dispose([c, kp]);
  disposeFixedCache(cache);
  disposeDecodeLayer(layer);
  disposeParams(P);
  rope.dispose();
});
