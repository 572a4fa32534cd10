import { UserError } from '../../src/errors';
import { gpt2Tokenizer } from '../../src/data/tokenizer';
import {
  bitsPerByte,
  loglikelihood,
  loglikelihoodRolling,
  moveTrailingWhitespace,
  perplexity,
  planBatches,
  rollingWindows,
  scoreInBatches,
  splitContextContinuation,
  wordPerplexity,
} from '../../src/eval/loglikelihood';
import { bigramModel, characterPieces, constantModel, contextLengthModel, pieceOf, pieceTokenizer } from './helpers';

// Characters plus BPE-like merges; "o w" spans the join of "hello" + " world", " yes" carries its space.
const PIECES = [...characterPieces('hello world Answer: yes no xyz'), 'he', 'll', 'o w', 'or', 'ld', ' yes', ' no'];
const tokenizer = pieceTokenizer(PIECES);
const pieces = (ids: number[]) => ids.map((id) => pieceOf(tokenizer, id));

describe('moveTrailingWhitespace', () => {
  it('moves every trailing whitespace character to the front of the continuation', () => {
    expect(moveTrailingWhitespace('Answer: \n ', 'yes')).toEqual({ context: 'Answer:', continuation: ' \n yes' });
    expect(moveTrailingWhitespace('Answer:', ' yes')).toEqual({ context: 'Answer:', continuation: ' yes' });
  });
});

describe('splitContextContinuation', () => {
  it('splits at the context token count when the context tokens are a prefix', () => {
    const split = splitContextContinuation(tokenizer, 'Answer:', ' yes');
    expect(pieces(split.contextTokens)).toEqual(['A', 'n', 's', 'w', 'e', 'r', ':']);
    expect(pieces(split.continuationTokens)).toEqual([' yes']);
    expect(split.diverged).toBe(false);
  });

  it('scores a token that spans the join as continuation', () => {
    // Alone, "hello" is he|ll|o; together, "hello world" is he|ll|o w|or|ld: the lists differ from index 2.
    expect(pieces(tokenizer.encode('hello'))).toEqual(['he', 'll', 'o']);
    const split = splitContextContinuation(tokenizer, 'hello', ' world');
    expect(pieces(split.contextTokens)).toEqual(['he', 'll']);
    expect(pieces(split.continuationTokens)).toEqual(['o w', 'or', 'ld']);
    expect(split.diverged).toBe(true);
  });

  it('splits a real GPT-2 encoding the same way', () => {
    const gpt2 = gpt2Tokenizer();
    const plain = splitContextContinuation(gpt2, 'The cat sat on the', ' mat');
    expect(gpt2.decode(plain.contextTokens)).toBe('The cat sat on the');
    expect(plain.continuationTokens).toEqual(gpt2.encode(' mat'));
    expect(plain.diverged).toBe(false);
    // "hello wor" + "ld": alone the context ends in the token " wor"; joined, " world" is one token.
    const spanning = splitContextContinuation(gpt2, 'hello wor', 'ld');
    expect(gpt2.encode('hello wor').length).toBe(2);
    expect(spanning.diverged).toBe(true);
    expect(gpt2.decode(spanning.contextTokens)).toBe('hello');
    expect(spanning.continuationTokens).toEqual(gpt2.encode(' world'));
    expect(spanning.continuationTokens.length).toBe(1);
  });
});

// p(next | prev): 0.5 for the piece after prev in PIECES order (cyclic), the rest spread evenly.
const successorProb = (prev: string, next: string): number => {
  const at = prev === '<eos>' ? -1 : PIECES.indexOf(prev);
  return PIECES[(at + 1) % PIECES.length] === next ? 0.5 : 0.5 / (PIECES.length - 1);
};
const HIGH = Math.log(0.5);
const LOW = Math.log(0.5 / (PIECES.length - 1));

describe('loglikelihood', () => {
  it('sums the continuation tokens, moving the space and scoring a spanning token', async () => {
    const model = bigramModel(tokenizer, successorProb);
    const [yes, world] = await loglikelihood(model, [
      { context: 'Answer: ', continuation: 'yes' },
      { context: 'hello', continuation: ' world' },
    ]);
    // " yes" after ":": the successor of ":" in PIECES is not " yes", so one low-probability token.
    expect(PIECES[PIECES.indexOf(':') + 1]).not.toBe(' yes');
    expect(yes.logprob).toBeCloseTo(LOW, 12);
    expect(yes).toMatchObject({ nTokens: 1, isGreedy: false });
    // "o w" after "ll", "or" after "o w", "ld" after "or": each the successor in PIECES, so high and greedy.
    expect(PIECES.slice(PIECES.indexOf('ll'))).toEqual(['ll', 'o w', 'or', 'ld', ' yes', ' no']);
    expect(world.logprob).toBeCloseTo(3 * HIGH, 12);
    expect(world).toMatchObject({ nTokens: 3, isGreedy: true });
    expect(pieces(model.batches.flat()[1])).toEqual(['he', 'll', 'o w', 'or', 'ld']);
  });

  it('is greedy only when every continuation token is the argmax', async () => {
    const model = bigramModel(tokenizer, successorProb);
    const [result, withX] = await loglikelihood(model, [
      { context: 'o w', continuation: 'orld' },
      { context: 'hello', continuation: ' worldx' },
    ]);
    expect(result).toMatchObject({ nTokens: 2, isGreedy: true });
    expect(result.logprob).toBeCloseTo(2 * HIGH, 12);
    // "x" after "ld" is not its successor (" yes" is): the first three tokens are greedy, the last is not.
    expect(withX).toMatchObject({ nTokens: 4, isGreedy: false });
    expect(withX.logprob).toBeCloseTo(3 * HIGH + LOW, 12);
  });

  it('conditions on eos when the context is empty', async () => {
    const model = bigramModel(tokenizer, successorProb);
    const [result] = await loglikelihood(model, [{ context: '', continuation: ' yes' }]);
    expect(pieces(model.batches[0][0])).toEqual(['<eos>', ' yes']);
    expect(result.logprob).toBeCloseTo(LOW, 12);
  });

  it('left-truncates the context and keeps the whole continuation', async () => {
    const model = bigramModel(tokenizer, successorProb, 5);
    const [result] = await loglikelihood(model, [{ context: 'xyzxyzxyz', continuation: ' no' }]);
    expect(pieces(model.batches[0][0])).toEqual(['z', 'x', 'y', 'z', ' no']);
    expect(result.logprob).toBeCloseTo(LOW, 12);
  });

  it('truncates a long context to fill the window exactly', async () => {
    for (const maxSeqLen of [3, 6, 9]) {
      const model = bigramModel(tokenizer, successorProb, maxSeqLen);
      await loglikelihood(model, [{ context: 'xyzxyzxyzxyz', continuation: ' no' }, { context: 'xyzxyzxyzxyz', continuation: 'xy' }]);
      expect(model.batches.flat().map((seq) => seq.length)).toEqual([maxSeqLen, maxSeqLen]);
    }
  });

  it('names the config key of the window when a continuation does not fit', async () => {
    const model = bigramModel(tokenizer, successorProb, 5);
    // Five continuation tokens and one of context need six tokens, five positions: one more than the window's four.
    await expect(loglikelihood(model, [{ context: 'x', continuation: 'xyzxy' }])).rejects.toThrow(
      /^request 0: continuation of 5 tokens does not fit in the scoring window of 4 positions \(model\.max_seq_len\) with at least one token of context$/,
    );
    await expect(loglikelihood({ ...model, windowKey: 'data.seq_len' }, [{ context: 'x', continuation: 'xyzxy' }])).rejects.toThrow(/\(data\.seq_len\)/);
    await expect(loglikelihood(model, [{ context: 'x', continuation: 'xyzx' }])).resolves.toHaveLength(1);
  });

  it('rejects an empty continuation, naming the item', async () => {
    const model = bigramModel(tokenizer, successorProb);
    const requests = [
      { context: 'x', continuation: 'y' },
      { context: 'x', continuation: '', id: 'boolq item 7 choice 1' },
    ];
    await expect(loglikelihood(model, requests)).rejects.toThrow(UserError);
    await expect(loglikelihood(model, requests)).rejects.toThrow(/^boolq item 7 choice 1: empty continuation/);
    await expect(loglikelihood(model, [{ context: 'x', continuation: '' }])).rejects.toThrow(/^request 0: empty/);
    expect(model.batches).toHaveLength(0);
  });

  it('batches by length, longest first, and returns results in request order', async () => {
    const texts = ['x', 'xyzxyz', 'xy', 'xyzx', 'xyz'];
    const requests = texts.map((continuation) => ({ context: 'z', continuation }));
    const batched = bigramModel(tokenizer, successorProb);
    const one = bigramModel(tokenizer, successorProb);
    const resultsBatched = await loglikelihood(batched, requests, { batchSize: 2 });
    const resultsSingle = await loglikelihood(one, requests, { batchSize: 1 });
    expect(batched.batches.map((b) => b.map((s) => s.length))).toEqual([[7, 5], [4, 3], [2]]);
    expect(resultsBatched).toEqual(resultsSingle);
    texts.forEach((text, i) => {
      const seq = ['z', ...text];
      let expected = 0;
      for (let k = 1; k < seq.length; k++) expected += Math.log(successorProb(seq[k - 1], seq[k]));
      expect(resultsBatched[i].logprob).toBeCloseTo(expected, 12);
      expect(resultsBatched[i].nTokens).toBe(text.length);
    });
    await expect(loglikelihood(one, requests, { batchSize: 0 })).rejects.toThrow(/eval.batch_size/);
  });

  it('fills batches past the batch size up to a token budget, padded tokens counted at the longest', () => {
    const lengths = [3, 10, 4, 4, 9, 2, 4];
    expect(planBatches(lengths, 2)).toEqual([[1, 4], [2, 3], [6, 0], [5]]);
    // 10 + 9 = 2 x 10 padded tokens; a third would make 30 > 24. Then 4, 4, 4, 3, 2: 5 x 4 = 20 <= 24.
    expect(planBatches(lengths, 2, 24)).toEqual([[1, 4], [2, 3, 6, 0, 5]]);
    // The batch size is kept even when its sequences alone pass the budget.
    expect(planBatches(lengths, 3, 5)).toEqual([[1, 4, 2], [3, 6, 0], [5]]);
    expect(() => planBatches(lengths, 0)).toThrow(/eval.batch_size/);
  });

  it('keeps a group together in one batch, groups ordered by their longest member', () => {
    const lengths = [3, 10, 4, 4, 9, 2, 4];
    const group = ['a', 'b', 'a', 'c', 'b', 'a', 'c'];
    // Groups b (10, 9), a (3, 4, 2) and c (4, 4): b first; a and c tie at 4, a first by its first index.
    expect(planBatches(lengths, 3, 0, (i) => group[i])).toEqual([[1, 4], [0, 2, 5], [3, 6]]);
    // A budget of 24 takes b (2 x 10); a then starts a batch of 4-token sequences that c fills to 5 x 4 = 20.
    expect(planBatches(lengths, 2, 24, (i) => group[i])).toEqual([[1, 4], [0, 2, 5, 3, 6]]);
    // One group larger than a batch holds (batch size 2, budget 8 = 2 x 4 tokens) is cut into batch-sized pieces.
    expect(planBatches([4, 4, 4, 4, 4], 2, 8, () => 'one')).toEqual([[0, 1], [2, 3], [4]]);
    // Cut longest first, so pieces pad little; a group of 200k (every item with an empty context) plans too.
    expect(planBatches([2, 5, 3, 4], 2, 0, () => 'one')).toEqual([[1, 3], [2, 0]]);
    expect(planBatches(new Array(200000).fill(3), 16, 30000, () => 'eos').map((b) => b.length)).toEqual(new Array(20).fill(10000));
  });

  it('asks only for the continuation positions, grouped by context for a scorer that packs prefixes', async () => {
    const requests = ['x', 'xy', 'xyz', 'xyzxy'].flatMap((continuation) => [
      { context: 'z', continuation },
      { context: 'zyx', continuation },
    ]);
    const plain = bigramModel(tokenizer, successorProb);
    const packing = { ...bigramModel(tokenizer, successorProb), packsPrefixes: true };
    const asked: number[][] = [];
    const recording = {
      ...packing,
      async scoreSequences(seqs: number[][], from?: number[]) {
        asked.push([...from!]);
        return packing.scoreSequences(seqs, from);
      },
    };
    const want = await loglikelihood(plain, requests, { batchSize: 4 });
    expect(await loglikelihood(recording, requests, { batchSize: 4 })).toEqual(want);
    // The context's last token predicts the first continuation token: from = context tokens - 1.
    expect(asked).toEqual([[2, 2, 2, 2], [0, 0, 0, 0]]);
    const contexts = (model: typeof plain) => model.batches.map((b) => [...new Set(b.map((seq) => pieces(seq).join('').startsWith('zyx') ? 'zyx' : 'z'))]);
    expect(contexts(packing)).toEqual([['zyx'], ['z']]);
    expect(contexts(plain)).toEqual([['zyx', 'z'], ['zyx', 'z']]); // by length alone, the two contexts mix
  });

  it('tokenizes while a scorer is still starting, then plans with the limits it reports when ready', async () => {
    const requests = ['x', 'xy', 'xyz'].flatMap((continuation) => [{ context: 'z', continuation }, { context: 'zyx', continuation }]);
    const inner = bigramModel(tokenizer, successorProb);
    const events: string[] = [];
    let becomeReady: () => void = () => undefined;
    const starting: Parameters<typeof loglikelihood>[0] = {
      ...inner,
      tokenizer: { ...tokenizer, encode: (text: string) => (events.push('encode'), tokenizer.encode(text)) },
      ready: () => new Promise<void>((resolve) => (becomeReady = resolve)),
      scoreSequences: (seqs: number[][], from?: number[]) => (events.push(`score ${seqs.length}`), inner.scoreSequences(seqs, from)),
    };
    const scoring = loglikelihood(starting, requests, { batchSize: 1 });
    await new Promise((resolve) => setImmediate(resolve));
    expect(events.length).toBeGreaterThan(0);
    expect(events.every((e) => e === 'encode')).toBe(true); // all tokenized, nothing sent before ready
    starting.tokenBudget = 1000; // what a scoring process reports with `ready`
    starting.packsPrefixes = true;
    becomeReady();
    expect(await scoring).toEqual(await loglikelihood(bigramModel(tokenizer, successorProb), requests, { batchSize: 1 }));
    expect(events.filter((e) => e.startsWith('score'))).toEqual(['score 6']); // one request within the reported budget
  });

  it('a scorer that cannot start rejects the call with its reason, sending nothing', async () => {
    const inner = bigramModel(tokenizer, successorProb);
    const failing = { ...inner, ready: () => Promise.reject(new UserError('model.safetensors: missing tensor model.norm.weight')) };
    await expect(loglikelihood(failing, [{ context: 'z', continuation: 'x' }])).rejects.toThrow('model.safetensors: missing tensor model.norm.weight');
    expect(inner.batches).toEqual([]);
  });

  it('refuses an answer with the wrong number of scores for the positions asked', async () => {
    const whole = bigramModel(tokenizer, successorProb);
    const ignoresFrom = { ...whole, scoreSequences: (seqs: number[][]) => whole.scoreSequences(seqs) };
    await expect(scoreInBatches(ignoresFrom, [[1, 2, 3]], { batchSize: 1, from: [1] })).rejects.toThrow('scoreSequences returned 2 scores for 1 positions of a sequence of 3 tokens');
  });

  it('keeps inFlight requests going, answers in request order whatever order they settle in', async () => {
    const requests = ['x', 'xyzxyz', 'xy', 'xyzx', 'xyz'].map((continuation) => ({ context: 'z', continuation }));
    const serial = await loglikelihood(bigramModel(tokenizer, successorProb), requests, { batchSize: 1 });
    const inner = bigramModel(tokenizer, successorProb);
    let open = 0;
    let most = 0;
    let calls = 0;
    const piped = {
      ...inner,
      inFlight: 2,
      async scoreSequences(seqs: number[][], from?: number[]) {
        open += 1;
        most = Math.max(most, open);
        // Later requests settle first: the caller must still take answers in the order it sent them.
        await new Promise((resolve) => setTimeout(resolve, 20 - 4 * calls++));
        open -= 1;
        return inner.scoreSequences(seqs, from);
      },
    };
    const progress: number[] = [];
    expect(await loglikelihood(piped, requests, { batchSize: 1, onProgress: (done) => progress.push(done) })).toEqual(serial);
    expect(most).toBe(2);
    expect(progress).toEqual([1, 2, 3, 4, 5]);
  });

  it('a failed request rejects the call; a later one failing while in flight is not left unhandled', async () => {
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown) => unhandled.push(reason);
    process.on('unhandledRejection', onUnhandled);
    try {
      let calls = 0;
      const failing = {
        ...constantModel(tokenizer, -1),
        inFlight: 3,
        async scoreSequences(): Promise<never> {
          const n = calls++;
          await new Promise((resolve) => setTimeout(resolve, 5));
          throw new Error(`request ${n} failed`);
        },
      };
      await expect(scoreInBatches(failing, [[1, 2], [1, 2, 3], [1, 2, 3, 4]], { batchSize: 1 })).rejects.toThrow('request 0 failed');
      await new Promise((resolve) => setTimeout(resolve, 30));
      expect(calls).toBe(3);
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('counts the tokens of the continuation as scored, the moved space included', async () => {
    const accented = pieceTokenizer(characterPieces('caféx '));
    const model = bigramModel(accented, () => 0.1);
    const [result] = await loglikelihood(model, [{ context: 'x ', continuation: 'café' }]);
    expect(result.nTokens).toBe(5);
    expect(result.logprob).toBeCloseTo(5 * Math.log(0.1), 12);
  });
});

describe('non-finite log-probabilities', () => {
  const source = 'runs/a/ckpt/step-10';
  for (const value of [NaN, -Infinity, Infinity]) {
    it(`refuse ${value} with one line naming the request and the model`, async () => {
      const model = constantModel(tokenizer, value, source);
      const failure = loglikelihood(model, [{ context: 'x', continuation: ' yes', id: 'boolq item 3 choice 1' }]);
      await expect(failure).rejects.toThrow(UserError);
      await expect(failure).rejects.toThrow(
        new RegExp(`^boolq item 3 choice 1: ${source} gives log-probability ${value}; its weights hold NaN or Inf \\(a corrupt or diverged checkpoint\\?\\)$`),
      );
    });
  }

  it('are refused in rolling scoring too, naming the model as "the model" when its source is unknown', async () => {
    await expect(loglikelihoodRolling(constantModel(tokenizer, NaN), 'xyz', { stride: 3 })).rejects.toThrow(/^window 0: the model gives log-probability NaN;/);
  });
});

describe('rolling loglikelihood', () => {
  it('scores every token exactly once', () => {
    for (const [nTokens, maxSeqLen, stride] of [[10, 4, 2], [10, 4, 3], [3, 8, 5], [17, 5, 1], [1, 2, 1]]) {
      const counts = new Array(nTokens + 1).fill(0);
      for (const w of rollingWindows(nTokens, maxSeqLen, stride)) {
        expect(w.end - w.start).toBeLessThanOrEqual(maxSeqLen);
        expect(w.scoreFrom).toBeGreaterThan(w.start);
        for (let t = w.scoreFrom; t < w.end; t++) counts[t] += 1;
      }
      expect(counts).toEqual([0, ...new Array(nTokens).fill(1)]);
    }
    expect(() => rollingWindows(5, 4, 4)).toThrow(/stride/);
  });

  it('gives each token as much context as its window allows', async () => {
    // 10 tokens, windows of 4, stride 2: contexts 1,2,3 in the first window, then 2,3 per window, the last
    // window (one new token) 3. The fake scores a token by minus its context length.
    const model = contextLengthModel(tokenizer, 4);
    const result = await loglikelihoodRolling(model, 'xyzxyzxyzx', { stride: 2 });
    expect(result).toEqual({ logprob: -(1 + 2 + 3 + 2 + 3 + 2 + 3 + 2 + 3 + 3), nTokens: 10 });
  });

  it('equals the sum of per-token scores of a bigram model, the first token after eos', async () => {
    const text = 'hello world xyz no';
    const ids = [tokenizer.eos, ...tokenizer.encode(text)];
    let expected = 0;
    for (let t = 1; t < ids.length; t++) expected += Math.log(successorProb(pieceOf(tokenizer, ids[t - 1]), pieceOf(tokenizer, ids[t])));
    for (const stride of [1, 2, 5]) {
      const model = bigramModel(tokenizer, successorProb, 6);
      const result = await loglikelihoodRolling(model, text, { stride, batchSize: 3 });
      expect(result.nTokens).toBe(ids.length - 1);
      expect(result.logprob).toBeCloseTo(expected, 10);
    }
  });

  it('perplexity helpers', () => {
    expect(perplexity(-2 * Math.log(4), 2)).toBeCloseTo(4, 12);
    expect(bitsPerByte(-3 * Math.LN2, 3)).toBeCloseTo(1, 12);
    expect(wordPerplexity(-6, 3)).toBeCloseTo(Math.exp(2), 12);
  });
});
