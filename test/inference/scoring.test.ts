import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { getTokenizer, type Tokenizer } from '../../src/data/tokenizer';
import { UserError } from '../../src/errors';
import { loglikelihoodRolling } from '../../src/eval/loglikelihood';
import { saveModel } from '../../src/engine/tfjs/checkpoint';
import { RopeTables } from '../../src/model/layers';
import { disposeParams } from '../../src/model/params';
import { referenceForward, type RefWeights } from '../../src/model/reference';
import { loadRunModel, scoreText, TfScoringModel } from '../../src/inference/scoring';
import type { ModelSpec } from '../../src/model/spec';
import { randomParams, randomTokens, tinySpec, toRefWeights } from '../helpers';

beforeAll(async () => {
  await tf.setBackend('cpu');
});

/** log p(next) at each position and whether next is the argmax, in float64 from the reference's logits. */
function referenceScores(W: RefWeights, s: ModelSpec, seq: number[]): { logprobs: number[]; greedy: number[] } {
  const { logits } = referenceForward(W, s, seq);
  const logprobs: number[] = [];
  const greedy: number[] = [];
  for (let t = 0; t + 1 < seq.length; t++) {
    const row = logits[t];
    const m = Math.max(...row);
    const lse = m + Math.log(row.reduce((acc, v) => acc + Math.exp(v - m), 0));
    logprobs.push(row[seq[t + 1]] - lse);
    greedy.push(row.indexOf(m) === seq[t + 1] ? 1 : 0);
  }
  return { logprobs, greedy };
}

/** A stand-in tokenizer: the scoring model only passes it through. */
const stubTokenizer = (vocab: number): Tokenizer => ({
  name: 'byte', vocabSize: vocab, eos: 0, hash: 'stub', encode: () => [], decode: (ids) => ids.join(','),
});

describe('TfScoringModel on a tiny random model', () => {
  const s = tinySpec({ variant: 'qk-norm', G: 2, dq: 10 });
  let P: Record<string, tf.Variable>;
  let rope: RopeTables;
  let W: RefWeights;
  let seqs: number[][];

  beforeAll(() => {
    P = randomParams(s, 5);
    rope = new RopeTables(s.dr, s.maxSeqLen, s.ropeTheta, [0, s.dn]);
    W = toRefWeights(P);
    // One sequence built so that every other next token is the reference's argmax, so greedy flags of both values occur.
    const greedySeq = [3];
    const rand = randomTokens(10, s.vocab, 77);
    for (let t = 0; t < 9; t++) {
      const row = referenceForward(W, s, greedySeq).logits[t];
      greedySeq.push(t % 2 === 0 ? row.indexOf(Math.max(...row)) : rand[t]);
    }
    seqs = [randomTokens(7, s.vocab, 11), greedySeq, randomTokens(2, s.vocab, 13), randomTokens(5, s.vocab, 17)];
  });
  afterAll(() => {
    disposeParams(P);
    rope.dispose();
  });

  test('per-position log p(next) and greedy flags match the float64 reference log-softmax', async () => {
    const model = new TfScoringModel({ spec: s, params: P, rope, tokenizer: stubTokenizer(s.vocab) }, { batchSize: 8 });
    const got = await model.scoreSequences(seqs);
    expect(got).toHaveLength(seqs.length);
    let greedyOnes = 0;
    seqs.forEach((seq, i) => {
      const want = referenceScores(W, s, seq);
      expect(got[i].logprobs).toHaveLength(seq.length - 1);
      want.logprobs.forEach((v, t) => expect(Math.abs(got[i].logprobs[t] - v)).toBeLessThan(2e-5));
      expect(Array.from(got[i].greedy)).toEqual(want.greedy);
      greedyOnes += want.greedy.reduce((a, b) => a + b, 0);
    });
    expect(greedyOnes).toBeGreaterThanOrEqual(5); // the constructed sequence really exercises greedy = 1
  });

  test('right padding never changes a sequence: alone, in any batch, with any batch size', async () => {
    const tokenizer = stubTokenizer(s.vocab);
    const batched = await new TfScoringModel({ spec: s, params: P, rope, tokenizer }, { batchSize: 8 }).scoreSequences(seqs);
    const small = await new TfScoringModel({ spec: s, params: P, rope, tokenizer }, { batchSize: 3 }).scoreSequences(seqs);
    const alone = new TfScoringModel({ spec: s, params: P, rope, tokenizer }, { batchSize: 1 });
    for (let i = 0; i < seqs.length; i++) {
      const [single] = await alone.scoreSequences([seqs[i]]);
      for (const other of [batched[i], small[i]]) {
        single.logprobs.forEach((v, t) => expect(Math.abs(other.logprobs[t] - v)).toBeLessThan(1e-6));
        expect(Array.from(other.greedy)).toEqual(Array.from(single.greedy));
      }
    }
  });

  test('from a start position on: the same scores as the whole sequence, cut', async () => {
    const model = new TfScoringModel({ spec: s, params: P, rope, tokenizer: stubTokenizer(s.vocab) }, { batchSize: 3 });
    const whole = await model.scoreSequences(seqs);
    const from = seqs.map((seq, i) => (i * 3) % (seq.length - 1));
    const cut = await model.scoreSequences(seqs, from);
    seqs.forEach((seq, i) => {
      expect(cut[i].logprobs).toHaveLength(seq.length - 1 - from[i]);
      expect(Array.from(cut[i].logprobs)).toEqual(Array.from(whole[i].logprobs.subarray(from[i])));
      expect(Array.from(cut[i].greedy)).toEqual(Array.from(whole[i].greedy.subarray(from[i])));
    });
    await expect(model.scoreSequences([[1, 2, 3]], [2])).rejects.toThrow(/sequence 0 starts at 2; expected 0\.\.1/);
  });

  test('refuses sequences it cannot score', async () => {
    const model = new TfScoringModel({ spec: s, params: P, rope, tokenizer: stubTokenizer(s.vocab) });
    // max_seq_len (32) positions fed: sequences of up to 33 tokens, the last one only a target.
    await expect(model.scoreSequences([[1]])).rejects.toThrow(/expected 2\.\.33/);
    await expect(model.scoreSequences([new Array(34).fill(1)])).rejects.toThrow(/34 tokens/);
    await expect(model.scoreSequences([[1, s.vocab]])).rejects.toThrow(/token id 37/);
  });

  test('leaves no tensors behind', async () => {
    const model = new TfScoringModel({ spec: s, params: P, rope, tokenizer: stubTokenizer(s.vocab) }, { batchSize: 2 });
    await model.scoreSequences(seqs);
    const before = tf.memory().numTensors;
    await model.scoreSequences(seqs);
    await model.scoreSequences(seqs.slice(1));
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('scoreText', () => {
  // The byte tokenizer's 258 ids fit a vocabulary of 260; a short context forces several windows.
  const s = tinySpec({ vocab: 260, maxSeqLen: 12 });
  const tokenizer = getTokenizer('byte');
  let P: Record<string, tf.Variable>;
  let rope: RopeTables;
  let W: RefWeights;
  const text = 'The jury said it did find that many of the voters';

  beforeAll(() => {
    P = randomParams(s, 9);
    rope = new RopeTables(s.dr, s.maxSeqLen, s.ropeTheta, [0, s.dn]);
    W = toRefWeights(P);
  });
  afterAll(() => {
    disposeParams(P);
    rope.dispose();
  });

  test('with stride 1 each token is scored with the max_seq_len tokens before it (eos first)', async () => {
    const model = new TfScoringModel({ spec: s, params: P, rope, tokenizer });
    const r = await scoreText(model, text, { stride: 1 });
    const ids = [tokenizer.eos, ...tokenizer.encode(text)];
    expect(r.n_tokens).toBe(ids.length - 1);
    expect(r.tokens.map((t) => t.id)).toEqual(ids.slice(1));
    expect(r.tokens[0].text).toBe('T');
    for (let t = 1; t < ids.length; t++) {
      const context = ids.slice(Math.max(0, t - s.maxSeqLen), t + 1);
      const want = referenceScores(W, s, context).logprobs;
      expect(Math.abs(r.tokens[t - 1].logprob - want[want.length - 1])).toBeLessThan(2e-5);
    }
    const total = r.tokens.reduce((a, t) => a + t.logprob, 0);
    expect(r.total_logprob).toBeCloseTo(total, 10);
    expect(r.mean_logprob).toBeCloseTo(total / r.n_tokens, 10);
    expect(r.perplexity).toBeCloseTo(Math.exp(-total / r.n_tokens), 8);
  });

  test('the total equals loglikelihoodRolling over the same windows', async () => {
    const model = new TfScoringModel({ spec: s, params: P, rope, tokenizer });
    for (const stride of [s.maxSeqLen - 1, 4]) {
      const r = await scoreText(model, text, { stride });
      const rolling = await loglikelihoodRolling(model, text, { stride });
      expect(r.total_logprob).toBeCloseTo(rolling.logprob, 8);
      expect(r.n_tokens).toBe(rolling.nTokens);
    }
    expect((await scoreText(model, text)).windows).toBe(Math.ceil(text.length / (s.maxSeqLen - 1)));
    await expect(scoreText(model, '')).rejects.toThrow(UserError);
  });
});

describe('loadRunModel', () => {
  const s = tinySpec({ vocab: 260, variant: 'qk-norm', G: 2 });
  const byte = getTokenizer('byte');
  const tokInfo = { name: 'byte', hash: byte.hash, eos: byte.eos };
  let root: string;
  let P: Record<string, tf.Variable>;

  beforeAll(async () => {
    root = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-scoring-'));
    P = randomParams(s, 4);
    for (const step of [3, 12]) {
      const dir = path.join(root, 'run', 'ckpt', `step-${step}`);
      await saveModel(dir, P, s, tokInfo);
      fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify({ step }));
    }
    // A half-written checkpoint must never be picked.
    fs.mkdirSync(path.join(root, 'run', 'ckpt', '.step-20.partial'), { recursive: true });
    await saveModel(path.join(root, 'plain'), P, s, tokInfo);
    await saveModel(path.join(root, 'no-tokenizer'), P, s, null);
    await saveModel(path.join(root, 'other-hash'), P, s, { ...tokInfo, hash: 'deadbeef' });
  });
  afterAll(() => disposeParams(P));

  test('a run folder gives its newest checkpoint, or the one of `step`; a model folder gives itself', () => {
    const newest = loadRunModel(path.join(root, 'run'));
    expect(newest.step).toBe(12);
    expect(newest.ckptDir).toBe(path.join(root, 'run', 'ckpt', 'step-12'));
    expect(newest.spec).toEqual(s);
    expect(newest.tokenizer.name).toBe('byte');
    expect(Array.from(newest.params['lm_head.weight'].dataSync())).toEqual(Array.from(P['lm_head.weight'].dataSync()));
    newest.dispose();

    const third = loadRunModel(path.join(root, 'run'), { step: 3 });
    expect(third.ckptDir).toBe(path.join(root, 'run', 'ckpt', 'step-3'));
    third.dispose();
    const direct = loadRunModel(path.join(root, 'run', 'ckpt', 'step-3'));
    expect(direct.step).toBe(3);
    direct.dispose();
    const plain = loadRunModel(path.join(root, 'plain'));
    expect(plain.step).toBeNull();
    plain.dispose();
  });

  test('bad folders, steps and tokenizers are UserErrors naming the problem, and leak nothing', () => {
    const before = tf.memory().numTensors;
    expect(() => loadRunModel(path.join(root, 'run'), { step: 5 })).toThrow(/--step 5: .* \(steps: 3, 12\)/);
    expect(() => loadRunModel(path.join(root, 'run', 'ckpt', 'step-3'), { step: 12 })).toThrow(/step 3, not step 12/);
    expect(() => loadRunModel(path.join(root, 'missing'))).toThrow(/no such folder/);
    expect(() => loadRunModel(root)).toThrow(/neither a run folder/);
    expect(() => loadRunModel(path.join(root, 'no-tokenizer'))).toThrow(/config\.json: tokenizer is missing/);
    expect(() => loadRunModel(path.join(root, 'other-hash'))).toThrow(/tokenizer\.hash differs/);
    expect(() => loadRunModel(path.join(root, 'other-hash'))).toThrow(UserError);
    expect(tf.memory().numTensors).toBe(before);
  });
});
