import { createHash } from 'crypto';
import { detokenize, loadBrown, type BrownDoc } from '../../src/data/brown';
import { loadDocuments } from '../../src/data/sources';
import { splitGroupedDocuments } from '../../src/data/split';
import { getTokenizer } from '../../src/data/tokenizer';
import {
  brownTestDocuments,
  CLOZE_TAGS,
  generateBrownCloze,
  generateBrownNextSentence,
  generateBrownWordOrder,
  type BrownGeneratorParams,
  type BrownItem,
} from '../../src/eval/brown-tasks';
import { evaluateTasks } from '../../src/eval/runner';
import { loadTask, taskDefinition } from '../../src/eval/tasks';
import type { ScoringModel } from '../../src/eval/types';

// The defaults of configs/base.yaml (data.seed, data.val_fraction, data.test_fraction).
const SPLIT = { seed: 1234, valFraction: 0.05, testFraction: 0.1 };
const PARAMS: BrownGeneratorParams = { items: 1000, choices: 4, minItems: 500 };

/**
 * Fingerprints of the generated items at the default split. If a change to the generator (or to the Brown
 * loader, detokenizer or split it builds on) moves these, bump the task's version in configs/tasks/ and record
 * the new fingerprint with it.
 */
const PINNED: Record<string, { version: number; sha256: string }> = {
  'brown-cloze': { version: 1, sha256: '5c4dd06aa788ae0b4532ff1abca43a686e19a9aafbf4bcb97edf2a0327575c59' },
  'brown-next-sentence': { version: 2, sha256: '41a935eaa008ae524274367e695447cdea1e33b83cb1da25f658968d68486db5' },
  'brown-word-order': { version: 1, sha256: 'ebd52f66286faa67fc9b8f7932be28efcd0340b55db00401a86c20e14247ab86' },
};

let docsById: Map<string, BrownDoc>;
let testIds: Set<string>;
let cloze: BrownItem[];
let nextSentence: BrownItem[];
let wordOrder: BrownItem[];

beforeAll(() => {
  docsById = new Map(loadBrown().map((d) => [d.id, d]));
  // The split the training data pipeline makes for data.source = brown.
  testIds = new Set(splitGroupedDocuments(loadDocuments('brown').docs, SPLIT.seed, SPLIT.valFraction, SPLIT.testFraction).test);
  const testDocs = brownTestDocuments(SPLIT);
  cloze = generateBrownCloze(testDocs, SPLIT.seed, PARAMS);
  nextSentence = generateBrownNextSentence(testDocs, SPLIT.seed, PARAMS);
  wordOrder = generateBrownWordOrder(testDocs, SPLIT.seed, PARAMS);
});

const wordAt = (ref: { docId: string; sentence: number; position?: number }) => docsById.get(ref.docId)!.sentences[ref.sentence][ref.position!];
const sentenceWords = (ref: { docId: string; sentence: number }) => docsById.get(ref.docId)!.sentences[ref.sentence].map((t) => t.word);
const fingerprint = (items: unknown) => createHash('sha256').update(JSON.stringify(items)).digest('hex');

describe('built-in Brown tasks', () => {
  it('use exactly the test documents of the data pipeline\'s split', () => {
    expect(brownTestDocuments(SPLIT).map((d) => d.id)).toEqual([...testIds].sort());
    expect(testIds.size).toBeGreaterThan(40);
  });

  it('have at least 500 four-way items, with the gold spread over positions', () => {
    for (const items of [cloze, nextSentence, wordOrder]) {
      expect(items.length).toBe(1000);
      expect(items.every((item) => item.choices.length === 4 && new Set(item.choices).size === 4)).toBe(true);
      for (let position = 0; position < 4; position++) expect(items.filter((item) => item.gold === position).length).toBeGreaterThan(180);
    }
  });

  it('are deterministic given the seed and differ under another seed', () => {
    const testDocs = brownTestDocuments(SPLIT);
    expect(generateBrownCloze(testDocs, SPLIT.seed, PARAMS)).toEqual(cloze);
    expect(generateBrownNextSentence(testDocs, SPLIT.seed, PARAMS)).toEqual(nextSentence);
    expect(generateBrownWordOrder(testDocs, SPLIT.seed, PARAMS)).toEqual(wordOrder);
    expect(generateBrownCloze(testDocs, SPLIT.seed + 1, PARAMS)[0]).not.toEqual(cloze[0]);
    const loaded = loadTask('brown-cloze', { brownSplit: SPLIT, limit: 3 });
    expect(loaded.items).toEqual(cloze.slice(0, 3).map(({ kind, context, choices, gold }) => ({ kind, context, choices, gold })));
  });

  it('cloze: blank and distractors are words of the same content tag in test documents', () => {
    for (const item of cloze) {
      expect(CLOZE_TAGS.has(item.tag!)).toBe(true);
      item.sources.forEach((ref, j) => {
        expect(testIds.has(ref.docId)).toBe(true);
        expect(wordAt(ref)).toEqual({ word: item.choices[j], tag: item.tag });
      });
      // The context is the previous sentence and the words before the blank of the gold's own sentence.
      const gold = item.sources[item.gold];
      const doc = docsById.get(gold.docId)!;
      const prefix = doc.sentences[gold.sentence].slice(0, gold.position).map((t) => t.word);
      expect(item.context).toBe(detokenize([sentenceWords({ docId: gold.docId, sentence: gold.sentence - 1 }), prefix]));
    }
  });

  it('next-sentence: the true third sentence against sentences of other test documents of the same genre', () => {
    for (const item of nextSentence) {
      const gold = item.sources[item.gold];
      const genre = docsById.get(gold.docId)!.genre;
      expect(item.context).toBe(detokenize([sentenceWords({ docId: gold.docId, sentence: gold.sentence - 2 }), sentenceWords({ docId: gold.docId, sentence: gold.sentence - 1 })]));
      item.sources.forEach((ref, j) => {
        expect(testIds.has(ref.docId)).toBe(true);
        expect(detokenize([sentenceWords(ref)])).toBe(item.choices[j]);
        if (j !== item.gold) {
          expect(ref.docId).not.toBe(gold.docId);
          expect(docsById.get(ref.docId)!.genre).toBe(genre);
        }
      });
    }
  });

  it('word-order: the sentence as written against shuffles with the same characters, first word and punctuation', () => {
    const firstWord = (text: string) => text.match(/[A-Za-z0-9]+/)![0];
    const punctuation = (text: string) => text.replace(/[A-Za-z0-9'&-]+/g, '_');
    for (const item of wordOrder) {
      const gold = item.sources[item.gold];
      expect(testIds.has(gold.docId)).toBe(true);
      expect(item.choices[item.gold]).toBe(detokenize([sentenceWords(gold)]));
      expect(item.context).toBe(detokenize([sentenceWords({ docId: gold.docId, sentence: gold.sentence - 1 })]));
      const written = item.choices[item.gold];
      for (const choice of item.choices) {
        // Same multiset of characters (so of words), same length, same start and punctuation skeleton: only order differs.
        expect([...choice].sort().join('')).toBe([...written].sort().join(''));
        expect(firstWord(choice)).toBe(firstWord(written));
        expect(punctuation(choice)).toBe(punctuation(written));
      }
      expect(written.length).toBeLessThanOrEqual(100);
    }
  });

  it('word-order: a unigram scorer (sum of per-word scores) is at chance, a bigram one is not', async () => {
    // Independent of any model: score each choice by word unigram counts, then by word bigram counts, both
    // estimated from the TRAIN documents. The first cannot separate orders; the second should.
    const trainDocs = loadBrown().filter((d) => !testIds.has(d.id));
    const uni = new Map<string, number>();
    const bi = new Map<string, number>();
    for (const d of trainDocs) {
      for (const sentence of d.sentences) {
        const words = sentence.map((t) => t.word.toLowerCase());
        words.forEach((w, i) => {
          uni.set(w, (uni.get(w) ?? 0) + 1);
          if (i > 0) bi.set(`${words[i - 1]} ${w}`, (bi.get(`${words[i - 1]} ${w}`) ?? 0) + 1);
        });
      }
    }
    const tokensOf = (text: string) => text.toLowerCase().match(/[a-z0-9'&-]+|[^\sa-z0-9'&-]/g)!;
    const uniScore = (text: string) => tokensOf(text).reduce((sum, w) => sum + Math.log(1 + (uni.get(w) ?? 0)), 0);
    const biScore = (text: string) => tokensOf(text).reduce((sum, w, i, all) => sum + (i > 0 ? Math.log(1 + (bi.get(`${all[i - 1]} ${w}`) ?? 0)) : 0), 0);
    const accuracy = (score: (t: string) => number) => {
      let correct = 0;
      for (const item of wordOrder) {
        const scores = item.choices.map(score);
        const best = Math.max(...scores);
        // Ties split evenly, as between identical scores no order can be preferred.
        const tied = scores.map((v, j) => (v === best ? j : -1)).filter((j) => j >= 0);
        if (tied.includes(item.gold)) correct += 1 / tied.length;
      }
      return correct / wordOrder.length;
    };
    expect(Math.abs(accuracy(uniScore) - 0.25)).toBeLessThan(0.03); // stderr at n=1000 is 0.014
    expect(accuracy(biScore)).toBeGreaterThan(0.6);
  });

  it('have chance 0.25 and report it', async () => {
    const constant: ScoringModel = {
      tokenizer: getTokenizer('byte'),
      maxSeqLen: 4096,
      scoreSequences: async (seqs, from) => seqs.map((s, i) => ({ logprobs: new Float64Array(s.length - 1 - (from?.[i] ?? 0)).fill(-1), greedy: new Uint8Array(s.length - 1 - (from?.[i] ?? 0)) })),
    };
    const task = loadTask('brown-next-sentence', { brownSplit: SPLIT, limit: 40 });
    const { tasks } = await evaluateTasks(constant, [task]);
    expect(tasks[0].chance).toBe(0.25);
  });

  it('refuse a test split too small for min_items', () => {
    const tiny = brownTestDocuments({ seed: 1, valFraction: 0.05, testFraction: 0.01 });
    expect(() => generateBrownNextSentence(tiny, 1, PARAMS)).toThrow(/brown-next-sentence: only \d+ items from the test documents \(needs 500\)/);
  });

  it('pin a fingerprint of the items to the task version', () => {
    const actual = { 'brown-cloze': fingerprint(cloze), 'brown-next-sentence': fingerprint(nextSentence), 'brown-word-order': fingerprint(wordOrder) };
    for (const [name, pinned] of Object.entries(PINNED)) {
      expect(taskDefinition(name).version).toBe(pinned.version);
      expect({ name, sha256: actual[name as keyof typeof actual] }).toEqual({ name, sha256: pinned.sha256 });
    }
  });
});
