// Where training text comes from (`data.source`) and how it is cut into documents. Documents are the unit of
// the train/val/test split, so a source must yield several of them:
//   brown          the embedded Brown corpus: 500 documents, group = genre letter.
//   file.txt       cut at paragraph breaks (blank lines) into documents of at least TEXT_DOCUMENT_CHARS
//                  characters, so one big text file still splits; a short file is a single document.
//   folder/        every .txt file below it (recursively, sorted by relative path), each cut as above;
//                  group = the file's first-level subfolder, so a folder per genre is stratified like Brown.
//   file.jsonl     one document per non-blank line, from its string field `text` (other fields are ignored);
//                  read a line at a time, so it may be larger than a JavaScript string can hold.
// A shard manifest is not a document source; src/data/dataset.ts recognises it before calling this.

import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';
import { loadBrown } from './brown';

export interface SourceDocument {
  id: string;
  text: string;
  /** Stratum for the split (Brown genre, subfolder); absent when the source has no natural groups. */
  group?: string;
}

export interface LoadedSource {
  docs: SourceDocument[];
  /** sha256 (hex) over the documents' texts in order, each prefixed by its UTF-8 byte length. */
  hash: string;
}

/** About one Brown document's worth of characters is ~11,000; a smaller unit gives small files a few documents. */
export const TEXT_DOCUMENT_CHARS = 8192;

export function hashDocumentTexts(docs: readonly SourceDocument[]): string {
  const hash = createHash('sha256');
  for (const doc of docs) {
    // The length prefix keeps ["ab", "c"] and ["a", "bc"] apart.
    hash.update(`${Buffer.byteLength(doc.text, 'utf8')}:`);
    hash.update(doc.text, 'utf8');
  }
  return hash.digest('hex');
}

/** Cut text at blank-line runs into pieces of at least `minChars` (the last piece may be shorter). */
export function cutAtParagraphs(text: string, minChars = TEXT_DOCUMENT_CHARS): string[] {
  const pieces: string[] = [];
  const paragraphBreak = /\n[ \t]*\n\s*/g;
  let start = 0;
  for (let match = paragraphBreak.exec(text); match; match = paragraphBreak.exec(text)) {
    if (match.index - start >= minChars) {
      pieces.push(text.slice(start, match.index));
      start = match.index + match[0].length;
    }
  }
  pieces.push(text.slice(start));
  return pieces.map((piece) => piece.trim()).filter((piece) => piece.length > 0);
}

function readTextFile(file: string): string {
  return fs
    .readFileSync(file, 'utf8')
    .replace(/^\uFEFF/, '')
    .replace(/\r\n?/g, '\n');
}

/** Documents of one text file; ids are `name` or, when cut, `name#0000`, `name#0001`, ... */
function textFileDocuments(file: string, idBase: string, group?: string): SourceDocument[] {
  const pieces = cutAtParagraphs(readTextFile(file));
  if (pieces.length === 1) return [{ id: idBase, text: pieces[0], group }];
  const width = Math.max(4, String(pieces.length - 1).length);
  return pieces.map((text, index) => ({ id: `${idBase}#${String(index).padStart(width, '0')}`, text, group }));
}

function listTextFiles(folder: string, relative = ''): string[] {
  const found: string[] = [];
  for (const entry of fs.readdirSync(path.join(folder, relative), { withFileTypes: true })) {
    const entryRelative = relative ? `${relative}/${entry.name}` : entry.name;
    if (entry.isDirectory()) found.push(...listTextFiles(folder, entryRelative));
    else if (entry.isFile() && entry.name.toLowerCase().endsWith('.txt')) found.push(entryRelative);
  }
  return found;
}

function folderDocuments(folder: string): SourceDocument[] {
  const files = listTextFiles(folder).sort();
  if (files.length === 0) throw new UserError(`data.source: folder ${folder} contains no .txt files`);
  // Subfolders (e.g. one per genre) become split strata; files directly in the folder form the stratum ".".
  const hasSubfolders = files.some((relative) => relative.includes('/'));
  return files.flatMap((relative) => {
    const group = hasSubfolders ? (relative.includes('/') ? relative.slice(0, relative.indexOf('/')) : '.') : undefined;
    return textFileDocuments(path.join(folder, relative), relative, group);
  });
}

/** Bytes read at a time by fileLines: a few megabytes keeps reads large without holding the file. */
const LINE_CHUNK_BYTES = 1 << 24;

/**
 * The lines of a file, split at "\n" like `text.split('\n')` (the last one may be empty), decoded one at a time. A
 * corpus of several hundred megabytes is longer than one JavaScript string may be, so it is never read whole; a
 * "\n" byte never occurs inside a multi-byte UTF-8 character, so splitting the bytes first is safe.
 */
export function* fileLines(file: string, chunkBytes = LINE_CHUNK_BYTES): Generator<string> {
  const fd = fs.openSync(file, 'r');
  try {
    const chunk = Buffer.allocUnsafe(chunkBytes);
    let carried = Buffer.alloc(0);
    for (let read = fs.readSync(fd, chunk, 0, chunkBytes, null); read > 0; read = fs.readSync(fd, chunk, 0, chunkBytes, null)) {
      const data = carried.length > 0 ? Buffer.concat([carried, chunk.subarray(0, read)]) : chunk.subarray(0, read);
      let start = 0;
      for (let newline = data.indexOf(0x0a, start); newline >= 0; newline = data.indexOf(0x0a, start)) {
        yield data.toString('utf8', start, newline);
        start = newline + 1;
      }
      // A copy: `chunk` is overwritten by the next read.
      carried = Buffer.from(data.subarray(start));
    }
    yield carried.toString('utf8');
  } finally {
    fs.closeSync(fd);
  }
}

function jsonlDocuments(file: string): SourceDocument[] {
  const name = path.basename(file);
  const docs: SourceDocument[] = [];
  let lineNumber = 0;
  for (const line of fileLines(file)) {
    lineNumber += 1;
    if (line.trim().length === 0) continue;
    let record: unknown;
    try {
      record = JSON.parse(line);
    } catch (err) {
      throw new UserError(`data.source: ${file} line ${lineNumber}: invalid JSON (${(err as Error).message.split('\n')[0]})`);
    }
    const text = typeof record === 'object' && record !== null ? (record as { text?: unknown }).text : undefined;
    if (typeof text !== 'string') {
      throw new UserError(`data.source: ${file} line ${lineNumber}: expected an object with a string field "text"`);
    }
    docs.push({ id: `${name}:${lineNumber}`, text });
  }
  return docs;
}

/** Read `data.source` into documents (see the header for the formats). Whitespace-only documents are dropped. */
export function loadDocuments(source: string): LoadedSource {
  let docs: SourceDocument[];
  if (source === 'brown') {
    docs = loadBrown().map((doc) => ({ id: doc.id, text: doc.text, group: doc.genre }));
  } else {
    if (!fs.existsSync(source)) throw new UserError(`data.source: file not found: ${source}`);
    const lower = source.toLowerCase();
    if (fs.statSync(source).isDirectory()) docs = folderDocuments(source);
    else if (lower.endsWith('.jsonl')) docs = jsonlDocuments(source);
    else if (lower.endsWith('.txt')) docs = textFileDocuments(source, path.basename(source));
    else {
      throw new UserError(
        `data.source: ${source}: unsupported file type (expected "brown", a .txt file, a folder of .txt files, a .jsonl file, or a shard folder with manifest.json)`,
      );
    }
  }
  docs = docs.filter((doc) => doc.text.trim().length > 0);
  if (docs.length === 0) throw new UserError(`data.source: ${source} has no text (no documents, or only whitespace)`);
  return { docs, hash: hashDocumentTexts(docs) };
}
