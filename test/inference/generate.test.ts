import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import Generate, { type GenerateCommandResult } from '../../src/commands/generate';
import { Rng } from '../../src/data/rng';
import { byteTokenizer } from '../../src/data/tokenizer';
import { saveModel } from '../../src/engine/tfjs/checkpoint';
import {
  drawFrom,
  generate,
  greedyToken,
  samplingDistribution,
  softmaxWithTemperature,
  topKFilter,
  topPFilter,
} from '../../src/inference/generate';
import { disposeParams } from '../../src/model/params';
import { loadRunModel } from '../../src/inference/scoring';
import type { ModelSpec } from '../../src/model/spec';
import { forward } from '../../src/model/transformer';
import { runCommand, stubOclifConfig } from '../bench/command';
import { randomParams, tinySpec } from '../helpers';

const close = (got: ArrayLike<number>, want: number[]) => {
  expect(got.length).toBe(want.length);
  want.forEach((w, i) => expect(got[i]).toBeCloseTo(w, 12));
};

describe('sampling functions', () => {
  // Logits ln(1..4): at temperature 1 the probabilities are exactly 0.1, 0.2, 0.3, 0.4.
  const logits = [Math.log(1), Math.log(2), Math.log(3), Math.log(4)];

  test('temperature', () => {
    close(softmaxWithTemperature(logits, 1), [0.1, 0.2, 0.3, 0.4]);
    // T = 1/2 squares the odds: 1, 4, 9, 16 over 30.
    close(softmaxWithTemperature(logits, 0.5), [1 / 30, 4 / 30, 9 / 30, 16 / 30]);
    // T = 2 takes square roots.
    const r = [1, Math.SQRT2, Math.sqrt(3), 2];
    const z = r.reduce((a, b) => a + b);
    close(softmaxWithTemperature(logits, 2), r.map((v) => v / z));
    close(softmaxWithTemperature([0, -Infinity, 0], 1), [0.5, 0, 0.5]);
  });

  test('greedy picks the largest logit, the lowest id on ties', () => {
    expect(greedyToken([0.1, 3, -2, 3])).toBe(1);
    close(samplingDistribution(logits, { temperature: 0, topK: 0, topP: 1 }), [0, 0, 0, 1]);
  });

  test('top-k keeps the k most likely and renormalises', () => {
    const p = Float64Array.from([0.1, 0.2, 0.3, 0.4]);
    close(topKFilter(p, 2), [0, 0, 3 / 7, 4 / 7]);
    close(topKFilter(p, 1), [0, 0, 0, 1]);
    close(topKFilter(p, 0), [0.1, 0.2, 0.3, 0.4]);
    close(topKFilter(p, 9), [0.1, 0.2, 0.3, 0.4]);
    // Ties at the boundary: the lower id stays.
    close(topKFilter(Float64Array.from([0.25, 0.25, 0.25, 0.25]), 2), [0.5, 0.5, 0, 0]);
  });

  test('top-p keeps the smallest most-likely set reaching p', () => {
    const p = Float64Array.from([0.1, 0.2, 0.3, 0.4]);
    close(topPFilter(p, 0.4), [0, 0, 0, 1]); // 0.4 alone reaches 0.4
    close(topPFilter(p, 0.5), [0, 0, 3 / 7, 4 / 7]); // 0.4 + 0.3
    close(topPFilter(p, 0.75), [0, 2 / 9, 3 / 9, 4 / 9]); // 0.4 + 0.3 + 0.2 = 0.9
    close(topPFilter(p, 0.01), [0, 0, 0, 1]); // at least one token
    close(topPFilter(p, 1), [0.1, 0.2, 0.3, 0.4]);
  });

  test('temperature, then top-k, then top-p', () => {
    // T = 1/2: [1, 4, 9, 16]/30; top-k 3: [0, 4, 9, 16]/29; top-p 0.6: 16/29 = 0.55 < 0.6, so 9 joins: [0, 0, 9, 16]/25.
    close(samplingDistribution(logits, { temperature: 0.5, topK: 3, topP: 0.6 }), [0, 0, 9 / 25, 16 / 25]);
  });

  test('inverse-CDF draws', () => {
    const p = Float64Array.from([0.1, 0.2, 0.3, 0.4]);
    expect(drawFrom(p, 0)).toBe(0);
    expect(drawFrom(p, 0.05)).toBe(0);
    expect(drawFrom(p, 0.1)).toBe(1);
    expect(drawFrom(p, 0.59)).toBe(2);
    expect(drawFrom(p, 0.999999)).toBe(3);
    expect(drawFrom(Float64Array.from([0.5, 0.5, 0]), 0.9999999999999999)).toBe(1); // never a zero-probability id
  });

  test('seeded draws follow the distribution', () => {
    const rng = Rng.fromSeed(5);
    const p = softmaxWithTemperature(logits, 1);
    const counts = [0, 0, 0, 0];
    const n = 40000;
    for (let i = 0; i < n; i++) counts[drawFrom(p, rng.nextFloat())]++;
    // Standard error of each frequency is at most sqrt(0.25 / 40000) = 0.0025: 0.01 is four of them.
    counts.forEach((c, i) => expect(Math.abs(c / n - (i + 1) / 10)).toBeLessThan(0.01));
  });
});

describe('generate', () => {
  const tokenizer = byteTokenizer();
  let dir: string;
  let baselineDir: string;
  const spec = (variant: ModelSpec['variant']) => tinySpec({ variant, vocab: 320, maxSeqLen: 48, G: 2, initStd: 0.5 });

  beforeAll(async () => {
    await tf.setBackend('cpu');
    stubOclifConfig();
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-generate-'));
    dir = path.join(root, 'qk-norm');
    baselineDir = path.join(root, 'baseline');
    for (const [d, variant] of [[dir, 'qk-norm'], [baselineDir, 'baseline']] as const) {
      const P = randomParams(spec(variant), 2);
      await saveModel(d, P, spec(variant), { name: 'byte', hash: tokenizer.hash, eos: 256 });
      disposeParams(P);
    }
  });

  afterAll(() => {
    jest.restoreAllMocks();
  });

  test('a qk-norm model decodes through latent+invrms; the same seed gives the same tokens', async () => {
    const model = loadRunModel(dir);
    try {
      const opts = { maxTokens: 12, sampling: { temperature: 1, topK: 0, topP: 1 }, seed: 7 };
      const a = await generate(model, 'The', opts);
      const tensorsBefore = tf.memory().numTensors;
      const b = await generate(model, 'The', opts);
      expect(tf.memory().numTensors).toBe(tensorsBefore); // the decoder's caches and every logits tensor are freed
      const c = await generate(model, 'The', { ...opts, seed: 8 });
      expect(a.cache).toBe('latent+invrms');
      // The latent, the rotated shared key and one inverse RMS per key group; no per-head key.
      const fed = a.promptTokens.length + a.tokens.length - 1; // the last drawn token is never fed
      expect(a.cacheShapes).toEqual({ c: [1, fed, 12], kpr: [1, fed, 4], rk: [1, fed, 2] });
      expect(a.cacheShapes).not.toHaveProperty('k');
      expect(a.tokens).toEqual(b.tokens);
      expect(a.text).toBe(b.text);
      expect(c.tokens).not.toEqual(a.tokens);
      expect(a.tokens.every((t) => t < tokenizer.vocabSize)).toBe(true); // rounded-up ids are never drawn
    } finally {
      model.dispose();
    }
  });

  test('--cache full-key serves the same model with per-head keys; the plain latent cache is refused', async () => {
    const model = loadRunModel(dir);
    try {
      const r = await generate(model, 'ab', { maxTokens: 3, sampling: { temperature: 0, topK: 0, topP: 1 }, seed: 0, cache: 'full-key' });
      expect(Object.keys(r.cacheShapes).sort()).toEqual(['c', 'k']);
      expect(r.cacheShapes.k).toEqual([1, model.spec.H, 4, model.spec.dn + model.spec.dr]);
      await expect(generate(model, 'ab', { maxTokens: 3, sampling: { temperature: 0, topK: 0, topP: 1 }, seed: 0, cache: 'latent' })).rejects.toThrow(/cannot serve a qk-norm model/);
      await expect(generate(model, 'ab', { maxTokens: 3, sampling: { temperature: 0, topK: 0, topP: 1 }, seed: 0, cache: 'foo' })).rejects.toThrow(/unknown cache "foo"/);
    } finally {
      model.dispose();
    }
  });

  test('greedy generation equals the argmax of the full forward pass at every step', async () => {
    for (const d of [dir, baselineDir]) {
      const model = loadRunModel(d);
      try {
        const r = await generate(model, 'Hi', { maxTokens: 6, sampling: { temperature: 0, topK: 0, topP: 1 }, seed: 0 });
        const seq = [...r.promptTokens];
        for (const t of r.tokens) {
          const logits = tf.tidy(() => forward(model.params, model.spec, model.rope, tf.tensor2d([seq], [1, seq.length], 'int32')).logits.slice([0, seq.length - 1, 0], [1, 1, -1]).reshape([-1]).dataSync());
          expect(t).toBe(greedyToken(Array.from(logits).slice(0, tokenizer.vocabSize)));
          seq.push(t);
        }
      } finally {
        model.dispose();
      }
    }
  });

  test('prompt plus new tokens beyond max_seq_len is refused up front', async () => {
    const model = loadRunModel(dir);
    try {
      await expect(generate(model, 'abcd', { maxTokens: 46, sampling: { temperature: 1, topK: 0, topP: 1 }, seed: 0 })).rejects.toThrow(/--max-tokens 46: .* max_seq_len 48 \(at most 45 new tokens\)/);
      expect((await generate(model, 'abcd', { maxTokens: 45, sampling: { temperature: 1, topK: 5, topP: 0.9 }, seed: 0 })).tokens.length).toBeLessThanOrEqual(45);
    } finally {
      model.dispose();
    }
  });

  test('the command streams text, and --json gives tokens, text, cache and timings reproducibly', async () => {
    const argv = ['--run', dir, '--prompt', 'ab', '--max-tokens', '8', '--seed', '3', '--top-k', '50', '--backend', 'cpu'];
    const first = await runCommand<GenerateCommandResult>(Generate, [...argv, '--json']);
    const second = await runCommand<GenerateCommandResult>(Generate, [...argv, '--json']);
    expect(first.exitCode).toBe(0);
    const parsed = JSON.parse(first.stdout) as GenerateCommandResult;
    expect(parsed.cache).toBe('latent+invrms');
    expect(parsed.prompt_tokens).toBe(2);
    expect(parsed.tokens.length).toBeGreaterThan(0);
    expect(parsed.text).toBe(tokenizer.decode(parsed.tokens));
    expect(parsed.timings.prefill_ms).toBeGreaterThan(0);
    expect(JSON.parse(second.stdout).tokens).toEqual(parsed.tokens);

    const streamed = await runCommand<GenerateCommandResult>(Generate, argv);
    expect(streamed.stdout).toBe(`${parsed.text}\n`);
    expect(streamed.stderr).toMatch(/cache latent\+invrms; prefill 2 tokens in [\d.]+ ms/);
  });

  test('bad sampling flags and caches exit 2 with the flag named', async () => {
    for (const [args, message] of [
      [['--top-p', '0'], '--top-p'],
      [['--temperature', '-1'], '--temperature'],
      [['--temperature', 'hot'], '--temperature'],
      [['--cache', 'latent'], '--cache latent: cannot serve a qk-norm model'],
      [['--cache', 'foo'], 'unknown cache "foo"'],
    ] as const) {
      const r = await runCommand(Generate, ['--run', dir, '--backend', 'cpu', ...args]);
      expect(r.exitCode).toBe(2);
      expect(r.stderr).toContain(message);
    }
  });
});
