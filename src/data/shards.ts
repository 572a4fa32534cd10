// Pre-tokenized corpora on disk: per split, a run of `.bin` shard files holding the split's token stream as
// little-endian uint16 (vocabularies up to 65,536 ids) or uint32, plus `manifest.json` describing them. The
// stream is each document's tokens followed by eos, documents in source order, exactly what
// src/data/dataset.ts builds in memory, so training on shards and on the raw source sees the same tokens.

import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';
import type { TokenizerName } from '../config/types';
import { loadDocuments } from './sources';
import { DocumentSplit, SplitName, SPLIT_NAMES, splitGroupedDocuments } from './split';
import type { Tokenizer } from './tokenizer';

export const SHARD_FORMAT = 'mlactl-shards';
export const SHARD_FORMAT_VERSION = 1;
export const MANIFEST_FILE = 'manifest.json';
/** 16 M tokens: 32 MB per uint16 shard, small enough to copy around, few enough files for a large corpus. */
export const DEFAULT_SHARD_TOKENS = 1 << 24;

export type ShardDtype = 'uint16' | 'uint32';

export interface ShardEntry {
  file: string;
  split: SplitName;
  tokens: number;
  /** sha256 (hex) of the file's bytes. */
  sha256: string;
}

export interface ShardManifest {
  format: typeof SHARD_FORMAT;
  version: typeof SHARD_FORMAT_VERSION;
  dtype: ShardDtype;
  tokenizer: TokenizerName;
  tokenizer_hash: string;
  vocab_size: number;
  eos: number;
  /** `data.source` as given when the shards were made (informational). */
  source: string;
  source_hash: string;
  shards: ShardEntry[];
  total_tokens: number;
  splits: {
    seed: number;
    val_fraction: number;
    test_fraction: number;
    documents: DocumentSplit;
    tokens: Record<SplitName, number>;
  };
}

export interface PrepareShardsOptions {
  /** Tokens per shard file (the last file of a split may hold fewer). */
  shardTokens?: number;
  seed: number;
  valFraction: number;
  testFraction: number;
  /** Called after each document with (documents done, documents in all). */
  onProgress?(done: number, total: number): void;
}

function bytesPerToken(dtype: ShardDtype): number {
  return dtype === 'uint16' ? 2 : 4;
}

export function dtypeForVocab(vocabSize: number): ShardDtype {
  return vocabSize <= 0x10000 ? 'uint16' : 'uint32';
}

/** Appends one split's token stream to consecutive shard files, rolling over every `shardTokens` tokens. */
class SplitShardWriter {
  readonly entries: ShardEntry[] = [];
  private fd: number | undefined;
  private fileTokens = 0;
  private fileHash = createHash('sha256');
  total = 0;

  constructor(
    private readonly dir: string,
    private readonly split: SplitName,
    private readonly dtype: ShardDtype,
    private readonly shardTokens: number,
  ) {}

  write(tokens: readonly number[]): void {
    let written = 0;
    while (written < tokens.length) {
      if (this.fd === undefined) this.openNext();
      const count = Math.min(tokens.length - written, this.shardTokens - this.fileTokens);
      const bytes = encodeLittleEndian(tokens, written, count, this.dtype);
      fs.writeSync(this.fd!, bytes);
      this.fileHash.update(bytes);
      this.fileTokens += count;
      this.total += count;
      written += count;
      if (this.fileTokens === this.shardTokens) this.closeCurrent();
    }
  }

  finish(): void {
    if (this.fd !== undefined) this.closeCurrent();
  }

  private openNext(): void {
    const file = `${this.split}-${String(this.entries.length).padStart(5, '0')}.bin`;
    this.fd = fs.openSync(path.join(this.dir, file), 'w');
    this.entries.push({ file, split: this.split, tokens: 0, sha256: '' });
    this.fileTokens = 0;
    this.fileHash = createHash('sha256');
  }

  private closeCurrent(): void {
    fs.closeSync(this.fd!);
    this.fd = undefined;
    const entry = this.entries[this.entries.length - 1];
    entry.tokens = this.fileTokens;
    entry.sha256 = this.fileHash.digest('hex');
  }
}

function encodeLittleEndian(tokens: readonly number[], from: number, count: number, dtype: ShardDtype): Uint8Array {
  const width = bytesPerToken(dtype);
  const bytes = new Uint8Array(count * width);
  const view = new DataView(bytes.buffer);
  for (let i = 0; i < count; i++) {
    if (dtype === 'uint16') view.setUint16(i * 2, tokens[from + i], true);
    else view.setUint32(i * 4, tokens[from + i], true);
  }
  return bytes;
}

/** Refuse to replace anything but an empty folder or an earlier shard folder. */
function checkReplaceable(outDir: string): void {
  if (!fs.existsSync(outDir)) return;
  if (!fs.statSync(outDir).isDirectory()) throw new UserError(`${outDir} exists and is not a folder; refusing to overwrite it`);
  const entries = fs.readdirSync(outDir);
  if (entries.length > 0 && !entries.includes(MANIFEST_FILE)) {
    throw new UserError(`${outDir} exists and is not a shard folder (no ${MANIFEST_FILE}); refusing to overwrite it`);
  }
}

/** Move the finished temporary folder into place; an earlier shard folder is swapped out, then removed. */
function installFolder(tempDir: string, outDir: string): void {
  if (!fs.existsSync(outDir)) {
    fs.renameSync(tempDir, outDir);
    return;
  }
  const retired = `${outDir}.old-${process.pid}-${Date.now()}`;
  fs.renameSync(outDir, retired);
  fs.renameSync(tempDir, outDir);
  fs.rmSync(retired, { recursive: true, force: true });
}

/**
 * Tokenize `source`, split it by document (as training would with the same seed and fractions) and write the
 * shards and manifest. Everything is written to a sibling temporary folder first and renamed into place, so
 * `outDir` never holds a half-written shard set.
 */
export async function prepareShards(
  source: string,
  tokenizer: Tokenizer,
  outDir: string,
  opts: PrepareShardsOptions,
): Promise<ShardManifest> {
  const shardTokens = opts.shardTokens ?? DEFAULT_SHARD_TOKENS;
  if (!Number.isInteger(shardTokens) || shardTokens < 1) throw new UserError(`shard tokens must be a positive integer, got ${shardTokens}`);
  checkReplaceable(outDir);
  const { docs, hash: sourceHash } = loadDocuments(source);
  const split = splitGroupedDocuments(docs, opts.seed, opts.valFraction, opts.testFraction);
  const splitOf = new Map<string, SplitName>();
  for (const name of SPLIT_NAMES) for (const id of split[name]) splitOf.set(id, name);

  const dtype = dtypeForVocab(tokenizer.vocabSize);
  const tempDir = `${outDir.replace(/[\\/]+$/, '')}.tmp-${process.pid}-${Date.now()}`;
  fs.mkdirSync(tempDir, { recursive: true });
  try {
    const writers = {
      train: new SplitShardWriter(tempDir, 'train', dtype, shardTokens),
      val: new SplitShardWriter(tempDir, 'val', dtype, shardTokens),
      test: new SplitShardWriter(tempDir, 'test', dtype, shardTokens),
    };
    let lastYield = Date.now();
    for (let index = 0; index < docs.length; index++) {
      const writer = writers[splitOf.get(docs[index].id)!];
      writer.write(tokenizer.encode(docs[index].text));
      writer.write([tokenizer.eos]);
      opts.onProgress?.(index + 1, docs.length);
      // Give timers (progress bars, signal handlers) a turn during long tokenization.
      if (Date.now() - lastYield > 50) {
        await new Promise((resolve) => setImmediate(resolve));
        lastYield = Date.now();
      }
    }
    for (const name of SPLIT_NAMES) writers[name].finish();

    const manifest: ShardManifest = {
      format: SHARD_FORMAT,
      version: SHARD_FORMAT_VERSION,
      dtype,
      tokenizer: tokenizer.name,
      tokenizer_hash: tokenizer.hash,
      vocab_size: tokenizer.vocabSize,
      eos: tokenizer.eos,
      source,
      source_hash: sourceHash,
      shards: SPLIT_NAMES.flatMap((name) => writers[name].entries),
      total_tokens: SPLIT_NAMES.reduce((sum, name) => sum + writers[name].total, 0),
      splits: {
        seed: opts.seed,
        val_fraction: opts.valFraction,
        test_fraction: opts.testFraction,
        documents: split,
        tokens: { train: writers.train.total, val: writers.val.total, test: writers.test.total },
      },
    };
    fs.writeFileSync(path.join(tempDir, MANIFEST_FILE), `${JSON.stringify(manifest, null, 1)}\n`);
    installFolder(tempDir, outDir);
    return manifest;
  } catch (err) {
    fs.rmSync(tempDir, { recursive: true, force: true });
    throw err;
  }
}

/** The manifest path when `source` names a shard set (its manifest.json, or a folder holding one), else undefined. */
export function findShardManifest(source: string): string | undefined {
  if (!fs.existsSync(source)) return undefined;
  if (fs.statSync(source).isDirectory()) {
    const candidate = path.join(source, MANIFEST_FILE);
    return fs.existsSync(candidate) ? candidate : undefined;
  }
  return path.basename(source) === MANIFEST_FILE ? source : undefined;
}

export function readManifest(manifestPath: string): ShardManifest {
  if (!fs.existsSync(manifestPath)) throw new UserError(`data.source: file not found: ${manifestPath}`);
  let manifest: ShardManifest;
  try {
    manifest = JSON.parse(fs.readFileSync(manifestPath, 'utf8')) as ShardManifest;
  } catch (err) {
    throw new UserError(`data.source: ${manifestPath}: invalid JSON (${(err as Error).message.split('\n')[0]})`);
  }
  if (manifest?.format !== SHARD_FORMAT) throw new UserError(`data.source: ${manifestPath}: not an ${SHARD_FORMAT} manifest`);
  if (manifest.version !== SHARD_FORMAT_VERSION) {
    throw new UserError(`data.source: ${manifestPath}: shard format version ${manifest.version} is not supported (expected ${SHARD_FORMAT_VERSION})`);
  }
  if (manifest.dtype !== 'uint16' && manifest.dtype !== 'uint32') throw new UserError(`data.source: ${manifestPath}: unknown dtype ${manifest.dtype}`);
  return manifest;
}

/**
 * Random access to one split's token stream without loading whole files: `read` issues positioned reads
 * (fs.readSync) into the shards a window touches. File descriptors stay open until `close()`.
 */
export class ShardReader {
  readonly length: number;
  private readonly width: number;
  /** Token offset where each shard starts, plus the total at the end (for binary search). */
  private readonly starts: number[];
  private readonly files: string[];
  private readonly fds: (number | undefined)[];

  constructor(dir: string, readonly manifest: ShardManifest, readonly split: SplitName) {
    this.width = bytesPerToken(manifest.dtype);
    const entries = manifest.shards.filter((entry) => entry.split === split);
    this.files = entries.map((entry) => path.join(dir, entry.file));
    this.starts = [0];
    entries.forEach((entry, index) => {
      const file = this.files[index];
      if (!fs.existsSync(file)) throw new UserError(`data.source: shard file not found: ${file}`);
      const expectedBytes = entry.tokens * this.width;
      if (fs.statSync(file).size !== expectedBytes) {
        throw new UserError(`data.source: shard ${file} has ${fs.statSync(file).size} bytes, the manifest says ${expectedBytes}`);
      }
      this.starts.push(this.starts[index] + entry.tokens);
    });
    this.length = this.starts[this.starts.length - 1];
    this.fds = this.files.map(() => undefined);
  }

  /** Tokens [offset, offset + length) of the split's stream. */
  read(offset: number, length: number): Uint32Array {
    if (!Number.isInteger(offset) || !Number.isInteger(length) || offset < 0 || length < 0 || offset + length > this.length) {
      throw new Error(`ShardReader(${this.split}): read [${offset}, ${offset + length}) is outside [0, ${this.length})`);
    }
    const out = new Uint32Array(length);
    let done = 0;
    let shard = this.shardContaining(offset);
    while (done < length) {
      const inShard = offset + done - this.starts[shard];
      const count = Math.min(length - done, this.starts[shard + 1] - this.starts[shard] - inShard);
      const bytes = new Uint8Array(count * this.width);
      const got = fs.readSync(this.fd(shard), bytes, 0, bytes.length, inShard * this.width);
      if (got !== bytes.length) throw new Error(`ShardReader: short read from ${this.files[shard]}`);
      const view = new DataView(bytes.buffer);
      for (let i = 0; i < count; i++) out[done + i] = this.width === 2 ? view.getUint16(i * 2, true) : view.getUint32(i * 4, true);
      done += count;
      shard++;
    }
    return out;
  }

  /** The split's files in stream order, as raw token segments. */
  segments(): { path: string; dtype: ShardDtype; offset_tokens: number; tokens: number }[] {
    return this.files.map((file, i) => ({ path: file, dtype: this.manifest.dtype, offset_tokens: 0, tokens: this.starts[i + 1] - this.starts[i] }));
  }

  close(): void {
    this.fds.forEach((fd, index) => {
      if (fd !== undefined) fs.closeSync(fd);
      this.fds[index] = undefined;
    });
  }

  private fd(shard: number): number {
    this.fds[shard] ??= fs.openSync(this.files[shard], 'r');
    return this.fds[shard]!;
  }

  /** The last shard whose start is <= offset (skipping empty shards is not needed: writers never leave one). */
  private shardContaining(offset: number): number {
    let low = 0;
    let high = this.files.length - 1;
    while (low < high) {
      const mid = (low + high + 1) >> 1;
      if (this.starts[mid] <= offset) low = mid;
      else high = mid - 1;
    }
    return low;
  }
}

export interface OpenedShards {
  dir: string;
  manifest: ShardManifest;
  readers: Record<SplitName, ShardReader>;
}

/** Open a shard set from its manifest path (see findShardManifest). */
export function openShards(manifestPath: string): OpenedShards {
  const manifest = readManifest(manifestPath);
  const dir = path.dirname(manifestPath);
  return {
    dir,
    manifest,
    readers: {
      train: new ShardReader(dir, manifest, 'train'),
      val: new ShardReader(dir, manifest, 'val'),
      test: new ShardReader(dir, manifest, 'test'),
    },
  };
}

/** Recompute every shard's sha256 and compare with the manifest; throws a UserError naming the first bad file. */
export function verifyShards(manifestPath: string): void {
  const manifest = readManifest(manifestPath);
  const dir = path.dirname(manifestPath);
  for (const entry of manifest.shards) {
    const file = path.join(dir, entry.file);
    if (!fs.existsSync(file)) throw new UserError(`data.source: shard file not found: ${file}`);
    const actual = createHash('sha256').update(fs.readFileSync(file)).digest('hex');
    if (actual !== entry.sha256) throw new UserError(`data.source: shard ${file} does not match its sha256 in ${manifestPath}`);
  }
}
