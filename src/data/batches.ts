// Deterministic batching. A split is one token stream (documents joined by eos); training reads windows of
// seq_len + 1 tokens from it (inputs and next-token targets). The window order is a pure function of
// (data.seed, step, micro-batch): resuming needs only the step, and every arm with the same data.seed trains on
// the same windows in the same order, whatever the backend.

import { createHash } from 'crypto';
import { UserError } from '../errors';
import { Rng } from './rng';
import type { ShardReader } from './shards';

/** A split's token stream, readable in windows. */
export interface TokenStore {
  length: number;
  read(offset: number, n: number): Int32Array;
  /** Where the tokens lie on disk, in order, when they do (shards): another engine can map them instead of a copy. */
  segments?: TokenSegment[];
}

/** A run of raw little-endian token ids in a file. */
export interface TokenSegment {
  path: string;
  dtype: 'uint16' | 'uint32';
  offset_tokens: number;
  tokens: number;
  /** `llmc`: an llm.c shard, whose tokens start after its 1024-byte header; otherwise a bare array. */
  format?: 'llmc';
}

function checkRange(offset: number, n: number, length: number): void {
  if (!Number.isInteger(offset) || !Number.isInteger(n) || offset < 0 || n < 0 || offset + n > length) {
    throw new Error(`TokenStore: read [${offset}, ${offset + n}) is outside [0, ${length})`);
  }
}

export function memoryTokenStore(tokens: Int32Array | Uint16Array | Uint32Array | readonly number[]): TokenStore {
  const data = tokens instanceof Int32Array ? tokens : Int32Array.from(tokens);
  return {
    length: data.length,
    read(offset, n) {
      checkRange(offset, n, data.length);
      return data.slice(offset, offset + n);
    },
  };
}

export function shardTokenStore(reader: ShardReader): TokenStore {
  return {
    length: reader.length,
    segments: reader.segments(),
    read(offset, n) {
      checkRange(offset, n, reader.length);
      // Token ids are below 2^31 for any real vocabulary, so the reinterpretation is exact.
      return new Int32Array(reader.read(offset, n).buffer);
    },
  };
}

/** Each document's tokens followed by eos, concatenated in the given order. */
export function concatenateDocuments(documentTokens: readonly (readonly number[])[], eos: number): TokenStore {
  const total = documentTokens.reduce((sum, tokens) => sum + tokens.length + 1, 0);
  const stream = new Int32Array(total);
  let at = 0;
  for (const tokens of documentTokens) {
    stream.set(tokens, at);
    at += tokens.length;
    stream[at++] = eos;
  }
  return memoryTokenStore(stream);
}

/**
 * Window slots: slot k starts at k * seqLen and spans seqLen + 1 tokens, so consecutive slots share one token
 * (the last target of slot k is the first input of slot k + 1) and every token transition is a training target
 * exactly once per epoch.
 */
export function windowSlotCount(storeLength: number, seqLen: number): number {
  return storeLength <= seqLen ? 0 : Math.floor((storeLength - 1) / seqLen);
}

/** A few recent epoch permutations; training walks epochs in order, so more would only hold memory. */
const permutationCache = new Map<string, Uint32Array>();
const PERMUTATION_CACHE_SIZE = 4;

/** The visiting order of all slots in one epoch: a seeded Fisher-Yates shuffle, its own stream per epoch. */
export function epochPermutation(seed: number, epoch: number, slots: number): Uint32Array {
  const key = `${seed}:${epoch}:${slots}`;
  const cached = permutationCache.get(key);
  if (cached) return cached;
  const order = new Uint32Array(slots);
  for (let i = 0; i < slots; i++) order[i] = i;
  Rng.fromSeed(seed, 0x62617463 /* stream "batc" */, epoch).shuffle(order);
  if (permutationCache.size >= PERMUTATION_CACHE_SIZE) permutationCache.delete(permutationCache.keys().next().value!);
  permutationCache.set(key, order);
  return order;
}

/**
 * Window start offsets of one micro-batch. Sequence number g = (step * microPerStep + micro) * batchSize + b
 * walks the epochs in order (epoch = g / slots); within an epoch, slot = permutation[g mod slots]. Keeping
 * batchSize * microPerStep fixed, any split of a step into micro-batches sees the same windows per step.
 *
 * @param batchSize sequences per micro-batch
 * @param microPerStep micro-batches per optimizer step (train.grad_accum)
 */
export function batchStarts(
  seed: number,
  step: number,
  micro: number,
  batchSize: number,
  seqLen: number,
  storeLength: number,
  microPerStep = 1,
): number[] {
  for (const [name, value] of Object.entries({ step, micro, batchSize, seqLen, microPerStep })) {
    if (!Number.isSafeInteger(value) || value < 0) throw new Error(`batchStarts: ${name} must be a non-negative integer, got ${value}`);
  }
  if (batchSize < 1 || seqLen < 1 || microPerStep < 1 || micro >= microPerStep) {
    throw new Error(`batchStarts: need batchSize, seqLen, microPerStep >= 1 and micro < microPerStep`);
  }
  const slots = windowSlotCount(storeLength, seqLen);
  if (slots === 0) {
    throw new UserError(`data.seq_len: the training split has ${storeLength} tokens, fewer than seq_len + 1 = ${seqLen + 1}`);
  }
  const first = (step * microPerStep + micro) * batchSize;
  const starts: number[] = [];
  for (let b = 0; b < batchSize; b++) {
    const sequence = first + b;
    const permutation = epochPermutation(seed, Math.floor(sequence / slots), slots);
    starts.push(permutation[sequence % slots] * seqLen);
  }
  return starts;
}

/** Inputs and next-token targets, both [B*T] row-major (row b = window b). */
export function makeBatch(store: TokenStore, starts: readonly number[], seqLen: number): { inputs: Int32Array; targets: Int32Array } {
  const inputs = new Int32Array(starts.length * seqLen);
  const targets = new Int32Array(starts.length * seqLen);
  starts.forEach((start, b) => {
    const window = store.read(start, seqLen + 1);
    inputs.set(window.subarray(0, seqLen), b * seqLen);
    targets.set(window.subarray(1), b * seqLen);
  });
  return { inputs, targets };
}

/** A short fingerprint of a batch's windows (first 16 hex of sha256 over the comma-joined decimal offsets). */
export function batchHash(starts: readonly number[]): string {
  return createHash('sha256').update(starts.join(',')).digest('hex').slice(0, 16);
}

/**
 * Fixed evaluation windows: min(slots, max(1, floor(maxTokens / seqLen))) distinct slots spread evenly over the
 * whole stream (so every part of the split counts), in increasing order. maxTokens <= 0 means every slot.
 */
export function validationWindows(storeLength: number, seqLen: number, maxTokens: number): number[] {
  const slots = windowSlotCount(storeLength, seqLen);
  if (slots === 0) return [];
  const count = maxTokens <= 0 ? slots : Math.min(slots, Math.max(1, Math.floor(maxTokens / seqLen)));
  const starts: number[] = [];
  // floor(i * slots / count) is strictly increasing in i because slots >= count.
  for (let i = 0; i < count; i++) starts.push(Math.floor((i * slots) / count) * seqLen);
  return starts;
}
