// The two tokenizers a run can name in `data.tokenizer`. Both reserve one end-of-document id (eos) that the data
// pipeline puts after every document; `decode` drops the special ids so decoded samples are plain text.

import { createHash } from 'crypto';
import * as fs from 'fs';
import { UserError } from '../errors';
import type { TokenizerName } from '../config/types';

export interface Tokenizer {
  name: TokenizerName;
  /** Ids are 0..vocabSize-1 (the model may round its embedding table up). */
  vocabSize: number;
  eos: number;
  encode(text: string): number[];
  decode(ids: readonly number[]): string;
  /** sha256 (hex) over the vocabulary and this implementation's version: shards record it to catch mismatches. */
  hash: string;
}

export const TOKENIZER_NAMES: readonly TokenizerName[] = ['byte', 'gpt2'];

/** Each tokenizer's id count, known without loading its tables (sizing a model needs no BPE ranks). */
export const TOKENIZER_VOCAB_SIZES: Readonly<Record<TokenizerName, number>> = { byte: 258, gpt2: 50257 };

/** Bump when encode/decode of either tokenizer changes in a way that changes token ids. */
const TOKENIZER_IMPLEMENTATION_VERSION = 1;

function sha256Hex(...parts: (string | Buffer)[]): string {
  const hash = createHash('sha256');
  for (const part of parts) hash.update(part);
  return hash.digest('hex');
}

export const BYTE_EOS = 256;
export const BYTE_PAD = 257;

/** UTF-8 bytes as ids 0..255, then eos = 256 and pad = 257. */
export function byteTokenizer(): Tokenizer {
  const encoder = new TextEncoder();
  // Invalid sequences (e.g. a sample cut mid-character) decode to U+FFFD instead of throwing.
  const decoder = new TextDecoder('utf-8', { fatal: false });
  return {
    name: 'byte',
    vocabSize: TOKENIZER_VOCAB_SIZES.byte,
    eos: BYTE_EOS,
    encode: (text) => Array.from(encoder.encode(text)),
    decode: (ids) => {
      const bytes: number[] = [];
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id > BYTE_PAD) throw new Error(`byte tokenizer: id ${id} is outside 0..${BYTE_PAD}`);
        if (id < 256) bytes.push(id);
      }
      return decoder.decode(Uint8Array.from(bytes));
    },
    hash: sha256Hex(`mlactl byte tokenizer v${TOKENIZER_IMPLEMENTATION_VERSION}: utf-8 bytes 0..255, eos 256, pad 257`),
  };
}

export const GPT2_EOS = 50256;

interface BpeEncodingModule {
  encode(text: string, options?: { allowedSpecial?: Set<string>; disallowedSpecial?: Set<string> }): number[];
  decode(ids: Iterable<number>): string;
  vocabularySize: number;
}

/** GPT-2's byte-level BPE (`r50k_base`, 50,257 ids; <|endoftext|> = 50256) from the `gpt-tokenizer` package. */
export function gpt2Tokenizer(): Tokenizer {
  // The cjs subpath loads only the r50k tables (about 1 MB), not every encoding the package ships.
  const bpe = require('gpt-tokenizer/cjs/encoding/r50k_base') as BpeEncodingModule;
  const rankFile = require.resolve('gpt-tokenizer/cjs/bpeRanks/r50k_base');
  // Documents may quote "<|endoftext|>" literally; it is text to encode, never the special id.
  const asPlainText = { allowedSpecial: new Set<string>(), disallowedSpecial: new Set<string>() };
  return {
    name: 'gpt2',
    vocabSize: TOKENIZER_VOCAB_SIZES.gpt2,
    eos: GPT2_EOS,
    encode: (text) => bpe.encode(text, asPlainText),
    decode: (ids) => {
      for (const id of ids) {
        if (!Number.isInteger(id) || id < 0 || id > GPT2_EOS) throw new Error(`gpt2 tokenizer: id ${id} is outside 0..${GPT2_EOS}`);
      }
      return bpe.decode(ids.filter((id) => id !== GPT2_EOS));
    },
    hash: sha256Hex(`mlactl gpt2 tokenizer v${TOKENIZER_IMPLEMENTATION_VERSION}: r50k_base, eos ${GPT2_EOS}\n`, fs.readFileSync(rankFile)),
  };
}

export function tokenizerVocabSize(name: string): number {
  if (!(TOKENIZER_NAMES as readonly string[]).includes(name)) {
    throw new UserError(`data.tokenizer: unknown tokenizer "${name}" (expected one of: ${TOKENIZER_NAMES.join(', ')})`);
  }
  return TOKENIZER_VOCAB_SIZES[name as TokenizerName];
}

const tokenizerCache = new Map<TokenizerName, Tokenizer>();

/** The tokenizer named by `data.tokenizer`, built once per process. */
export function getTokenizer(name: string): Tokenizer {
  if (!(TOKENIZER_NAMES as readonly string[]).includes(name)) {
    throw new UserError(`data.tokenizer: unknown tokenizer "${name}" (expected one of: ${TOKENIZER_NAMES.join(', ')})`);
  }
  const known = name as TokenizerName;
  let tokenizer = tokenizerCache.get(known);
  if (!tokenizer) {
    tokenizer = known === 'byte' ? byteTokenizer() : gpt2Tokenizer();
    tokenizerCache.set(known, tokenizer);
  }
  return tokenizer;
}
