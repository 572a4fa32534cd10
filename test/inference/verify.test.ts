import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { loadConfig } from '../../src/config/load';
import { getTokenizer } from '../../src/data/tokenizer';
import { saveModel } from '../../src/engine/tfjs/checkpoint';
import { RopeTables } from '../../src/model/layers';
import { disposeParams, paramInfos } from '../../src/model/params';
import { IncrementalDecoder } from '../../src/model/transformer';
import { verificationParams, verifyCheckpoint, verifyConfig, verifyModel, verifyTokens } from '../../src/inference/verify';
import { randomParams, tinySpec } from '../helpers';

const TINY = path.resolve(__dirname, '../../configs/models/tiny.yaml');

beforeAll(async () => {
  await tf.setBackend('cpu');
});

afterEach(() => {
  jest.restoreAllMocks();
});

const variants: [string, string[]][] = [
  ['baseline', ['model.variant=baseline']],
  ['qk-clip', ['model.variant=qk-clip']],
  ['qk-norm full G=H', ['model.variant=qk-norm']],
  ['qk-norm full G=2 q-lora', ['model.variant=qk-norm', 'model.qk_norm.key_groups=2', 'model.q_lora_rank=8']],
  ['qk-norm nope G=1', ['model.variant=qk-norm', 'model.qk_norm.scope=nope', 'model.qk_norm.key_groups=1']],
];

test.each(variants)('the tiny config passes for %s, comparing every cache of the variant', async (_name, sets) => {
  const cfg = loadConfig(TINY, sets);
  const r = await verifyConfig(cfg, TINY);
  const caches = cfg.model.variant === 'qk-norm' ? ['latent+invrms', 'full-key'] : ['latent', 'full-key'];
  expect(r.reference.run).toBe(true);
  expect(r.comparisons.map((c) => c.pair)).toEqual([
    'training vs reference',
    ...caches.map((k) => `${k} vs reference`),
    ...caches.map((k) => `${k} vs training`),
  ]);
  for (const c of r.comparisons) expect(c.max_rel_error).toBeLessThan(1e-5);
  expect(r.pass).toBe(true);
  expect(r.prefill).toBe(8);
});

test('a tolerance of 0 fails: float32 forms never agree bit for bit with float64', async () => {
  const r = await verifyConfig(loadConfig(TINY, ['model.variant=qk-norm']), TINY, { tolerance: 0 });
  expect(r.pass).toBe(false);
  expect(r.comparisons.find((c) => c.pair === 'training vs reference')!.pass).toBe(false);
});

test('a decoder that is slightly wrong is caught while the training form still passes', async () => {
  const feed = IncrementalDecoder.prototype.feed;
  // Nudge one logit of every decode call by 1e-3 of the largest: small, but 100x the tolerance.
  jest.spyOn(IncrementalDecoder.prototype, 'feed').mockImplementation(function (this: IncrementalDecoder, tokens: tf.Tensor2D) {
    const logits = feed.call(this, tokens);
    const nudged = tf.tidy(() => {
      const scale = tf.max(tf.abs(logits)).mul(1e-3);
      const bump = tf.oneHot(tf.tensor1d([0], 'int32'), logits.size).reshape(logits.shape).mul(scale);
      return tf.add(logits, bump) as tf.Tensor3D;
    });
    logits.dispose();
    return nudged;
  });
  const r = await verifyConfig(loadConfig(TINY, ['model.variant=qk-norm']), TINY);
  expect(r.pass).toBe(false);
  for (const c of r.comparisons) expect(c.pass).toBe(c.form === 'training');
});

test('a perturbed norm weight that only the training form sees is caught', async () => {
  // Hand the decoders a model whose k_norm weight differs from the training form's: the folds of §4 must show it.
  const s = tinySpec({ variant: 'qk-norm', G: 2 });
  const P = randomParams(s, 8);
  const rope = new RopeTables(s.dr, s.maxSeqLen, s.ropeTheta, [0, s.dn]);
  const name = 'model.layers.1.self_attn.k_norm.weight';
  const altered = { ...P, [name]: tf.mul(P[name], 1.01) };
  const feed = IncrementalDecoder.prototype.feed;
  jest.spyOn(IncrementalDecoder.prototype, 'feed').mockImplementation(function (this: IncrementalDecoder, tokens: tf.Tensor2D) {
    (this as unknown as { P: Record<string, tf.Tensor> }).P = altered;
    return feed.call(this, tokens);
  });
  const r = await verifyModel(P, s, rope, verifyTokens(10, s.vocab, 1));
  expect(r.comparisons.filter((c) => !c.pass).map((c) => c.pair)).toEqual([
    'latent+invrms vs reference', 'full-key vs reference', 'latent+invrms vs training', 'full-key vs training',
  ]);
  altered[name].dispose();
  disposeParams(P);
  rope.dispose();
});

test('large models skip the float64 reference and compare the caches with the training form', async () => {
  const s = tinySpec();
  const P = randomParams(s, 2);
  const rope = new RopeTables(s.dr, s.maxSeqLen, s.ropeTheta, [0, s.dn]);
  const before = tf.memory().numTensors;
  const r = await verifyModel(P, s, rope, verifyTokens(6, s.vocab, 3), { referenceParamLimit: 100 });
  expect(tf.memory().numTensors).toBe(before);
  expect(r.reference.run).toBe(false);
  expect(r.comparisons.map((c) => c.pair)).toEqual(['latent vs training', 'full-key vs training']);
  expect(r.pass).toBe(true);
  await expect(verifyModel(P, s, rope, [1])).rejects.toThrow(/--tokens/);
  await expect(verifyModel(P, s, rope, verifyTokens(33, s.vocab, 3))).rejects.toThrow(/--tokens/);
  disposeParams(P);
  rope.dispose();
});

test('verification weights: the seeded init with every norm weight moved off 1', () => {
  const s = tinySpec({ variant: 'qk-norm', dq: 6 });
  const P = verificationParams(s, 4);
  for (const p of paramInfos(s).filter((i) => i.init === 'ones')) {
    const v = Array.from(P[p.name].dataSync());
    expect(v.every((x) => x >= 0.5 && x <= 1.5)).toBe(true);
    expect(v.some((x) => Math.abs(x - 1) > 0.1)).toBe(true);
  }
  const again = verificationParams(s, 4);
  expect(Array.from(again['model.layers.0.self_attn.q_norm.weight'].dataSync())).toEqual(Array.from(P['model.layers.0.self_attn.q_norm.weight'].dataSync()));
  disposeParams(P);
  disposeParams(again);
});

test('a checkpoint folder is verified with its own weights', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-verify-'));
  const s = tinySpec({ vocab: 260, variant: 'qk-norm', scope: 'nope', G: 1 });
  const P = randomParams(s, 6);
  const byte = getTokenizer('byte');
  await saveModel(dir, P, s, { name: 'byte', hash: byte.hash, eos: byte.eos });
  disposeParams(P);
  const r = await verifyCheckpoint(dir, { tokens: 12 });
  expect(r.source).toBe(dir);
  expect(r.tokens).toBe(12);
  expect(r.pass).toBe(true);
});
