/**
 * Token shards in the format llm.c and modded-nanogpt write for FineWeb (`fineweb_train_000001.bin`, ...): a header
 * of 256 little-endian int32 (magic 20240520, version 1, token count), then the tokens as uint16 (GPT-2 ids). A
 * folder of them is a data source: files whose names contain `train` form the training split, `val` the
 * validation split, in name order. They are read in place, window by window, never loaded whole.
 */
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';
import type { TokenSegment, TokenStore } from './batches';

export const LLMC_MAGIC = 20240520;
export const LLMC_VERSION = 1;
export const LLMC_HEADER_BYTES = 256 * 4;

/** Token count of one shard, after checking its header against its size. Refusals name the file. */
export function readLlmcHeader(file: string): number {
  const fd = fs.openSync(file, 'r');
  try {
    const head = Buffer.alloc(LLMC_HEADER_BYTES);
    const got = fs.readSync(fd, head, 0, LLMC_HEADER_BYTES, 0);
    if (got < 12) throw new UserError(`data.source: ${file}: too short for an llm.c shard header`);
    const magic = head.readInt32LE(0);
    if (magic !== LLMC_MAGIC) throw new UserError(`data.source: ${file}: not an llm.c token shard (magic ${magic}, expected ${LLMC_MAGIC})`);
    const version = head.readInt32LE(4);
    if (version !== LLMC_VERSION) throw new UserError(`data.source: ${file}: llm.c shard version ${version}, expected ${LLMC_VERSION} (uint16 tokens)`);
    const tokens = head.readInt32LE(8);
    const size = fs.fstatSync(fd).size;
    if (tokens < 0 || size !== LLMC_HEADER_BYTES + 2 * tokens) {
      throw new UserError(`data.source: ${file}: header says ${tokens} tokens, the file holds ${(size - LLMC_HEADER_BYTES) / 2}`);
    }
    return tokens;
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The split files of a folder of `.bin` shards, or undefined when `source` holds none. Every `.bin` there is taken
 * for an llm.c shard, so one with another header is refused by name rather than skipped.
 */
export function findLlmcShards(source: string): { train: string[]; val: string[] } | undefined {
  if (!fs.existsSync(source) || !fs.statSync(source).isDirectory()) return undefined;
  const files = fs.readdirSync(source).filter((f) => f.endsWith('.bin')).sort().map((f) => path.join(source, f));
  if (!files.length) return undefined;
  const train = files.filter((f) => /train/.test(path.basename(f)));
  const val = files.filter((f) => /val/.test(path.basename(f)));
  if (!train.length) throw new UserError(`data.source: ${source}: .bin shards, but no file name contains "train"`);
  return { train, val };
}

/** One split's shards as a token stream read in place. */
export function llmcTokenStore(files: string[]): TokenStore & { close(): void } {
  const counts = files.map(readLlmcHeader);
  const starts = [0];
  counts.forEach((n, i) => starts.push(starts[i] + n));
  const length = starts[starts.length - 1];
  const fds = new Map<number, number>();
  const fd = (i: number) => {
    if (!fds.has(i)) fds.set(i, fs.openSync(files[i], 'r'));
    return fds.get(i)!;
  };
  const segments: TokenSegment[] = files.map((file, i) => ({ path: file, dtype: 'uint16', offset_tokens: 0, tokens: counts[i], format: 'llmc' }));
  return {
    length,
    segments,
    read(offset, n) {
      if (!Number.isInteger(offset) || !Number.isInteger(n) || offset < 0 || n < 0 || offset + n > length) {
        throw new Error(`llm.c shards: read [${offset}, ${offset + n}) is outside [0, ${length})`);
      }
      const out = new Int32Array(n);
      let done = 0;
      let i = starts.findIndex((s, k) => k < counts.length && offset < starts[k + 1] && offset >= s);
      while (done < n) {
        const inFile = offset + done - starts[i];
        const count = Math.min(n - done, counts[i] - inFile);
        const bytes = Buffer.alloc(count * 2);
        if (fs.readSync(fd(i), bytes, 0, bytes.length, LLMC_HEADER_BYTES + inFile * 2) !== bytes.length) throw new Error(`llm.c shards: short read from ${files[i]}`);
        for (let k = 0; k < count; k++) out[done + k] = bytes.readUInt16LE(k * 2);
        done += count;
        i++;
      }
      return out;
    },
    close() {
      for (const f of fds.values()) fs.closeSync(f);
      fds.clear();
    },
  };
}

/**
 * A fingerprint of the shard set that does not read gigabytes: every file's name, size and header, and the hash of
 * its first and last MiB. Recorded as the run's data hash.
 */
export function llmcSourceHash(files: string[]): string {
  const h = createHash('sha256');
  for (const file of files) {
    const size = fs.statSync(file).size;
    h.update(`${path.basename(file)} ${size}\n`);
    const fdNum = fs.openSync(file, 'r');
    try {
      for (const at of [0, Math.max(0, size - (1 << 20))]) {
        const b = Buffer.alloc(Math.min(1 << 20, size));
        fs.readSync(fdNum, b, 0, b.length, at);
        h.update(b);
      }
    } finally {
      fs.closeSync(fdNum);
    }
  }
  return h.digest('hex');
}
