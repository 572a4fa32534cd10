// Built-in tasks generated from the held-out TEST documents of the run's Brown split, so a model trained on Brown
// is evaluated on text it never saw, and the same (seed, fractions) always gives the same items.
// Changing what a generator produces changes the task: bump `version` in its configs/tasks/ YAML (the test
// test/eval/brown-tasks.test.ts pins a fingerprint of the items to the version).

import { printable, UserError } from '../errors';
import { detokenize, loadBrown, type BrownDoc, type TaggedWord } from '../data/brown';
import { hashString, Rng } from '../data/rng';
import { splitGroupedDocuments } from '../data/split';
import type { TaskDefinition } from './types';
import type { MetricName, MultipleChoiceItem, TaskItem } from './types';

export interface BrownSplitOptions {
  /** data.seed */
  seed: number;
  /** data.val_fraction */
  valFraction: number;
  /** data.test_fraction */
  testFraction: number;
}

/** The test documents of the run's split: the same call the data pipeline makes for `data.source: brown` (group = genre). */
export function brownTestDocuments(split: BrownSplitOptions, docs: readonly BrownDoc[] = loadBrown()): BrownDoc[] {
  const grouped = docs.map((d) => ({ id: d.id, group: d.genre }));
  const testIds = new Set(splitGroupedDocuments(grouped, split.seed, split.valFraction, split.testFraction).test);
  return docs.filter((d) => testIds.has(d.id));
}

/** Where a choice was taken from: document, sentence index, and (for cloze) word position. */
export interface SourceRef {
  docId: string;
  sentence: number;
  position?: number;
}

export interface BrownItem extends MultipleChoiceItem {
  /** Source of each choice, in choice order (gold included). */
  sources: SourceRef[];
  /** Cloze: the Brown tag shared by the gold word and its distractors. */
  tag?: string;
}

export interface BrownGeneratorParams {
  items: number;
  choices: number;
  /** Fewer usable items than this is an error (the split's test part is too small). */
  minItems: number;
}

/** Plain noun, verb and adjective tags; suffixed forms (-tl title, -hl headline, -nc cited, fw- foreign) are left out. */
export const CLOZE_TAGS: ReadonlySet<string> = new Set(['nn', 'nns', 'vb', 'vbd', 'vbg', 'vbn', 'vbz', 'jj']);

function isHeadline(sentence: readonly TaggedWord[]): boolean {
  return sentence.some((t) => t.tag.endsWith('-hl'));
}

/** A lowercase word of letters: capitalised words give the answer away (sentence starts, names). */
function isClozeWord(token: TaggedWord): boolean {
  return CLOZE_TAGS.has(token.tag) && /^[a-z]{3,}$/.test(token.word);
}

/** The blank must follow a word or a comma-like mark, so " word" after the prefix reads as written text. */
function spaceBeforeNext(token: TaggedWord): boolean {
  return /[A-Za-z0-9,;:]$/.test(token.word);
}

/** Consecutive (pieces of) sentences as prose, joined by a space, with the corpus's own detokenizer. */
export function prose(...sentences: (readonly TaggedWord[])[]): string {
  return detokenize(sentences.map((tokens) => tokens.map((t) => t.word)));
}

/** Put the gold choice at a random position among the distractors. */
function placeGold<T>(rng: Rng, gold: T, distractors: T[]): { choices: T[]; gold: number } {
  const goldIndex = rng.nextInt(distractors.length + 1);
  const choices = [...distractors];
  choices.splice(goldIndex, 0, gold);
  return { choices, gold: goldIndex };
}

/** Draw `count` distinct distractors from `pool` (uniform over entries) that differ from `gold` by `key`. */
function drawDistinct<T>(rng: Rng, pool: readonly T[], count: number, key: (entry: T) => string, gold: string): T[] | undefined {
  const chosen: T[] = [];
  const seen = new Set([gold]);
  // Bounded retries: a pool with too few distinct entries gives up instead of looping.
  for (let attempt = 0; attempt < 50 * count && chosen.length < count; attempt++) {
    const entry = pool[rng.nextInt(pool.length)];
    if (seen.has(key(entry))) continue;
    seen.add(key(entry));
    chosen.push(entry);
  }
  return chosen.length === count ? chosen : undefined;
}

function requireEnough(task: string, items: readonly unknown[], params: BrownGeneratorParams): void {
  if (items.length < params.minItems) {
    throw new UserError(`eval task ${task}: only ${items.length} items from the test documents (needs ${params.minItems}); raise data.test_fraction`);
  }
}

/**
 * brown-cloze: one content word blanked in a sentence. Context: the previous sentence and the words before the
 * blank; choices: the word and distractors with the same tag, each drawn from the occurrences of that tag in
 * the test documents (so distractors are as frequent as real answers and a unigram model stays at chance).
 */
export function generateBrownCloze(testDocs: readonly BrownDoc[], seed: number, params: BrownGeneratorParams, task = 'brown-cloze'): BrownItem[] {
  const rng = Rng.fromSeed(seed, hashString(task));
  const occurrencesByTag = new Map<string, { word: string; ref: SourceRef }[]>();
  const blanks: { doc: BrownDoc; sentence: number; position: number }[] = [];
  for (const doc of testDocs) {
    doc.sentences.forEach((tokens, sentence) => {
      const eligible: number[] = [];
      tokens.forEach((token, position) => {
        if (!isClozeWord(token)) return;
        const list = occurrencesByTag.get(token.tag) ?? [];
        list.push({ word: token.word, ref: { docId: doc.id, sentence, position } });
        occurrencesByTag.set(token.tag, list);
        if (sentence > 0 && position > 0 && spaceBeforeNext(tokens[position - 1])) eligible.push(position);
      });
      if (eligible.length > 0 && !isHeadline(tokens) && !isHeadline(doc.sentences[sentence - 1] ?? [])) {
        blanks.push({ doc, sentence, position: eligible[rng.nextInt(eligible.length)] });
      }
    });
  }
  rng.shuffle(blanks);
  const items: BrownItem[] = [];
  for (const blank of blanks) {
    if (items.length >= params.items) break;
    const tokens = blank.doc.sentences[blank.sentence];
    const goldToken = tokens[blank.position];
    const pool = occurrencesByTag.get(goldToken.tag)!;
    const distractors = drawDistinct(rng, pool, params.choices - 1, (o) => o.word, goldToken.word);
    if (!distractors) continue;
    const gold = { word: goldToken.word, ref: { docId: blank.doc.id, sentence: blank.sentence, position: blank.position } };
    const placed = placeGold(rng, gold, distractors);
    items.push({
      kind: 'multiple_choice',
      context: prose(blank.doc.sentences[blank.sentence - 1], tokens.slice(0, blank.position)),
      choices: placed.choices.map((c) => c.word),
      gold: placed.gold,
      sources: placed.choices.map((c) => c.ref),
      tag: goldToken.tag,
    });
  }
  requireEnough(task, items, params);
  return items;
}

/** Sentences long enough to carry meaning and short enough to keep items compact. */
/**
 * Choices are at most NEXT_SENTENCE_MAX_CHARS characters, so that with the byte tokenizer a choice plus some context
 * fits the demo model's 256-token window (a longer continuation could not be scored at all).
 */
export const NEXT_SENTENCE_MAX_CHARS = 160;

function fitsChoice(tokens: readonly TaggedWord[]): boolean {
  return isUsableSentence(tokens) && prose(tokens).length <= NEXT_SENTENCE_MAX_CHARS;
}

function isUsableSentence(tokens: readonly TaggedWord[]): boolean {
  return tokens.length >= 4 && tokens.length <= 60 && !isHeadline(tokens);
}

/**
 * brown-next-sentence: context is two consecutive sentences; choices are the sentence that follows them and
 * sentences from OTHER test documents of the same genre (so topic words do not give the answer away as easily
 * as across genres). Genres with a single test document give no items.
 */
export function generateBrownNextSentence(testDocs: readonly BrownDoc[], seed: number, params: BrownGeneratorParams, task = 'brown-next-sentence'): BrownItem[] {
  const rng = Rng.fromSeed(seed, hashString(task));
  const sentencesByGenre = new Map<string, { text: string; ref: SourceRef }[]>();
  for (const doc of testDocs) {
    const list = sentencesByGenre.get(doc.genre) ?? [];
    doc.sentences.forEach((tokens, sentence) => {
      if (fitsChoice(tokens)) list.push({ text: prose(tokens), ref: { docId: doc.id, sentence } });
    });
    sentencesByGenre.set(doc.genre, list);
  }
  const windows: { doc: BrownDoc; first: number }[] = [];
  for (const doc of testDocs) {
    for (let first = 0; first + 2 < doc.sentences.length; first++) {
      if ([0, 1].every((k) => isUsableSentence(doc.sentences[first + k])) && fitsChoice(doc.sentences[first + 2])) windows.push({ doc, first });
    }
  }
  rng.shuffle(windows);
  const items: BrownItem[] = [];
  for (const { doc, first } of windows) {
    if (items.length >= params.items) break;
    const others = sentencesByGenre.get(doc.genre)!.filter((s) => s.ref.docId !== doc.id);
    if (others.length === 0) continue;
    const gold = { text: prose(doc.sentences[first + 2]), ref: { docId: doc.id, sentence: first + 2 } };
    const distractors = drawDistinct(rng, others, params.choices - 1, (s) => s.text, gold.text);
    if (!distractors) continue;
    const placed = placeGold(rng, gold, distractors);
    items.push({
      kind: 'multiple_choice',
      context: prose(doc.sentences[first], doc.sentences[first + 1]),
      choices: placed.choices.map((c) => c.text),
      gold: placed.gold,
      sources: placed.choices.map((c) => c.ref),
    });
  }
  requireEnough(task, items, params);
  return items;
}

/** Word-order sentences stay short enough that a choice fits the demo model's 128-byte training window. */
export const WORD_ORDER_MAX_CHARS = 100;

/**
 * A token that takes part in the shuffle: a word or number. Punctuation stays (its spacing differs), and so do
 * abbreviations ("Dr.", "A.M."): moved to the end, their period would merge with the sentence's.
 */
function isMovable(token: TaggedWord): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9'&-]*$/.test(token.word);
}

/**
 * brown-word-order: context is the previous sentence; choices are the next sentence as written and versions of
 * it with its words shuffled. The first word and every punctuation mark keep their places, so every choice has the
 * same words, the same length and the same capitalised start: only the order tells them apart, which is what a
 * language model learns first (a unigram model scores chance; a bigram model already does well).
 */
export function generateBrownWordOrder(testDocs: readonly BrownDoc[], seed: number, params: BrownGeneratorParams, task = 'brown-word-order'): BrownItem[] {
  const rng = Rng.fromSeed(seed, hashString(task));
  const candidates: { doc: BrownDoc; sentence: number }[] = [];
  for (const doc of testDocs) {
    doc.sentences.forEach((tokens, sentence) => {
      if (sentence === 0 || !isUsableSentence(tokens) || isHeadline(doc.sentences[sentence - 1])) return;
      if (prose(tokens).length > WORD_ORDER_MAX_CHARS) return;
      // At least four movable words after the first word, so three distinct shuffles exist with room to spare.
      if (tokens.filter(isMovable).length >= 5) candidates.push({ doc, sentence });
    });
  }
  rng.shuffle(candidates);
  const items: BrownItem[] = [];
  for (const { doc, sentence } of candidates) {
    if (items.length >= params.items) break;
    const tokens = doc.sentences[sentence];
    // The first word stays: a capitalised word in mid-sentence would give a shuffle away without any grammar.
    const slots = tokens.map((t, i) => i).filter((i) => isMovable(tokens[i])).slice(1);
    const gold = prose(tokens);
    const shuffles: string[] = [];
    const seen = new Set([gold]);
    for (let attempt = 0; attempt < 50 && shuffles.length < params.choices - 1; attempt++) {
      const order = rng.shuffle([...slots]);
      const shuffled = tokens.slice();
      slots.forEach((slot, k) => (shuffled[slot] = tokens[order[k]]));
      const text = prose(shuffled);
      if (!seen.has(text)) {
        seen.add(text);
        shuffles.push(text);
      }
    }
    if (shuffles.length < params.choices - 1) continue;
    const ref = { docId: doc.id, sentence };
    const placed = placeGold(rng, gold, shuffles);
    items.push({
      kind: 'multiple_choice',
      context: prose(doc.sentences[sentence - 1]),
      choices: placed.choices,
      gold: placed.gold,
      sources: placed.choices.map(() => ref),
    });
  }
  requireEnough(task, items, params);
  return items;
}

function generatorParams(definition: TaskDefinition): BrownGeneratorParams {
  const read = (key: string, fallback: number, least: number): number => {
    const value = definition.params[key] ?? fallback;
    if (!Number.isInteger(value) || value < least) throw new UserError(`${printable(definition.file)}: key "params.${key}" must be an integer >= ${least}`);
    return value;
  };
  return { items: read('items', 1000, 1), choices: read('choices', 4, 2), minItems: read('min_items', 500, 0) };
}

export interface TaskGenerator {
  kind: TaskItem['kind'];
  metrics: MetricName[];
  generate(definition: TaskDefinition, split: BrownSplitOptions): TaskItem[];
}

/** Items without their provenance: what the runner scores. */
function plain(items: BrownItem[]): MultipleChoiceItem[] {
  return items.map(({ kind, context, choices, gold }) => ({ kind, context, choices, gold }));
}

export const BROWN_GENERATORS: Readonly<Record<string, TaskGenerator>> = {
  'brown-cloze': {
    kind: 'multiple_choice',
    metrics: ['acc', 'acc_norm', 'acc_bytes'],
    generate: (definition, split) => plain(generateBrownCloze(brownTestDocuments(split), split.seed, generatorParams(definition), definition.name)),
  },
  'brown-next-sentence': {
    kind: 'multiple_choice',
    metrics: ['acc', 'acc_norm', 'acc_bytes'],
    generate: (definition, split) => plain(generateBrownNextSentence(brownTestDocuments(split), split.seed, generatorParams(definition), definition.name)),
  },
  'brown-word-order': {
    kind: 'multiple_choice',
    metrics: ['acc', 'acc_norm', 'acc_bytes'],
    generate: (definition, split) => plain(generateBrownWordOrder(brownTestDocuments(split), split.seed, generatorParams(definition), definition.name)),
  },
};
