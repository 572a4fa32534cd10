// From `data.*` config to the three token streams training and evaluation read. Either the source is tokenized
// in memory, or it names a shard set (src/data/shards.ts) made earlier with the same layout.

import * as path from 'path';
import type { DataConfig } from '../config/types';
import { UserError } from '../errors';
import { concatenateDocuments, shardTokenStore, TokenStore } from './batches';
import { findLlmcShards, llmcSourceHash, llmcTokenStore } from './llmc';
import { findShardManifest, openShards } from './shards';
import { loadDocuments, SourceDocument } from './sources';
import { DocumentSplit, SplitName, SPLIT_NAMES, splitGroupedDocuments } from './split';
import { getTokenizer, Tokenizer } from './tokenizer';

export type SplitSettings = Pick<DataConfig, 'seed' | 'val_fraction' | 'test_fraction'>;

export interface TokenizedSplits {
  train: TokenStore;
  val: TokenStore;
  test: TokenStore;
  split: DocumentSplit;
}

/**
 * Split documents (stratified by `group` when all have one), tokenize them, and join each split's documents
 * (in source order, each followed by eos) into one stream.
 */
export function tokenizeDocuments(docs: readonly SourceDocument[], tokenizer: Tokenizer, settings: SplitSettings): TokenizedSplits {
  const split = splitGroupedDocuments(docs, settings.seed, settings.val_fraction, settings.test_fraction);
  const splitOf = new Map<string, SplitName>();
  for (const name of SPLIT_NAMES) for (const id of split[name]) splitOf.set(id, name);
  const tokensBySplit: Record<SplitName, number[][]> = { train: [], val: [], test: [] };
  for (const doc of docs) tokensBySplit[splitOf.get(doc.id)!].push(tokenizer.encode(doc.text));
  return {
    train: concatenateDocuments(tokensBySplit.train, tokenizer.eos),
    val: concatenateDocuments(tokensBySplit.val, tokenizer.eos),
    test: concatenateDocuments(tokensBySplit.test, tokenizer.eos),
    split,
  };
}

export interface TrainingData extends TokenizedSplits {
  tokenizer: Tokenizer;
  /** sha256 of the source documents (for shards: as recorded in the manifest). */
  sourceHash: string;
  /** `shards`: the split is the one stored in the manifest; data.val_fraction, data.test_fraction and the
   * split part of data.seed are not applied (data.seed still orders the batches). */
  origin: 'documents' | 'shards' | 'llmc';
  /** Releases shard file descriptors; a no-op for in-memory data. */
  close(): void;
}

/** The last in-memory tokenization: arms of one sweep share a source, and tokenizing Brown takes seconds. */
let lastTokenized: { key: string; data: TokenizedSplits; sourceHash: string } | undefined;

/** Open the data a run's `data` config names, as token streams per split. */
export function openTrainingData(data: DataConfig): TrainingData {
  const tokenizer = getTokenizer(data.tokenizer);
  const manifestPath = data.source === 'brown' ? undefined : findShardManifest(data.source);
  if (manifestPath) {
    const shards = openShards(manifestPath);
    const manifest = shards.manifest;
    if (manifest.tokenizer !== tokenizer.name) {
      throw new UserError(`data.tokenizer: is "${tokenizer.name}" but the shards in ${manifestPath} were made with "${manifest.tokenizer}"`);
    }
    if (manifest.tokenizer_hash !== tokenizer.hash) {
      throw new UserError(`data.tokenizer: the "${tokenizer.name}" vocabulary differs from the one the shards in ${manifestPath} were made with`);
    }
    return {
      tokenizer,
      train: shardTokenStore(shards.readers.train),
      val: shardTokenStore(shards.readers.val),
      test: shardTokenStore(shards.readers.test),
      split: manifest.splits.documents,
      sourceHash: manifest.source_hash,
      origin: 'shards',
      close: () => SPLIT_NAMES.forEach((name) => shards.readers[name].close()),
    };
  }
  const llmc = data.source === 'brown' ? undefined : findLlmcShards(data.source);
  if (llmc) {
    // llm.c's FineWeb shards hold GPT-2 ids; another tokenizer would read them as something else.
    if (tokenizer.name !== 'gpt2') throw new UserError(`data.tokenizer: ${data.source} holds llm.c shards of GPT-2 tokens; set data.tokenizer: gpt2`);
    const train = llmcTokenStore(llmc.train);
    const val = llmcTokenStore(llmc.val);
    const empty = llmcTokenStore([]);
    const names = (files: string[]) => files.map((f) => path.basename(f));
    return {
      tokenizer,
      train,
      val,
      test: empty,
      split: { train: names(llmc.train), val: names(llmc.val), test: [] },
      sourceHash: llmcSourceHash([...llmc.train, ...llmc.val]),
      origin: 'llmc',
      close: () => [train, val].forEach((s) => s.close()),
    };
  }
  const { docs, hash } = loadDocuments(data.source);
  const key = [hash, tokenizer.hash, data.seed, data.val_fraction, data.test_fraction].join('|');
  if (lastTokenized?.key !== key) lastTokenized = { key, data: tokenizeDocuments(docs, tokenizer, data), sourceHash: hash };
  return { tokenizer, ...lastTokenized.data, sourceHash: hash, origin: 'documents', close: () => undefined };
}
