/**
 * The safetensors container: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
 * shape and byte range, then the raw little-endian data. Only what mlactl stores is supported (F32, I32, U8).
 *
 * Files are streamed both ways, one tensor at a time: a checkpoint can exceed what one Buffer or one read/write call
 * may hold (paper-400m's is 3 GiB; Node refuses more than 2^31-1 bytes per call).
 */
// A default import, so every call looks the function up on Node's own module object: tests stub fs.writeSync there.
import fs from 'fs';
import { UserError } from '../errors';
import { writeAll, writeAtomically } from './atomic';

export type StoredArray = Float32Array | Int32Array | Uint8Array;
export interface StoredTensor {
  shape: number[];
  data: StoredArray;
}

type Dtype = 'F32' | 'I32' | 'U8';
const DTYPES: Record<Dtype, { bytes: number; make(n: number): StoredArray }> = {
  F32: { bytes: 4, make: (n) => new Float32Array(n) },
  I32: { bytes: 4, make: (n) => new Int32Array(n) },
  U8: { bytes: 1, make: (n) => new Uint8Array(n) },
};
const isDtype = (d: unknown): d is Dtype => typeof d === 'string' && Object.prototype.hasOwnProperty.call(DTYPES, d);

// Node refuses more than 2^31-1 bytes in one read or write, and Linux moves at most 0x7ffff000 per call anyway.
const IO_CHUNK = 2 ** 30;
// The reference implementation's limit: a corrupt length field must not make the reader allocate gigabytes.
const MAX_HEADER_BYTES = 100_000_000;

export function dtypeOf(a: StoredArray): Dtype {
  if (a instanceof Float32Array) return 'F32';
  if (a instanceof Int32Array) return 'I32';
  if (a instanceof Uint8Array) return 'U8';
  throw new Error(`safetensors: unsupported array type ${(a as object).constructor?.name}`);
}

/** The length field and JSON header of a file holding `tensors`, and the data order (name order). */
function layout(tensors: Record<string, StoredTensor>, metadata: Record<string, string>): { names: string[]; head: Buffer } {
  // Name order, so the same tensors always give the same bytes.
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const name of names) {
    const t = tensors[name];
    const dtype = dtypeOf(t.data);
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) throw new Error(`safetensors: ${name} has ${t.data.length} values for shape [${t.shape}]`);
    // The format allows no padding between tensors, and readers (this one too) refuse elements off their alignment.
    if (offset % DTYPES[dtype].bytes !== 0) throw new Error(`safetensors: ${name} would start at byte ${offset}, off the ${DTYPES[dtype].bytes}-byte alignment of ${dtype}`);
    header[name] = { dtype, shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so the data starts 8-byte aligned, which lets readers view it without copying.
  json += ' '.repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);
  const head = Buffer.alloc(8 + Buffer.byteLength(json));
  head.writeBigUInt64LE(BigInt(head.length - 8), 0);
  head.write(json, 8, 'utf8');
  return { names, head };
}

const bytesOf = (d: StoredArray): Uint8Array => new Uint8Array(d.buffer, d.byteOffset, d.byteLength);

/** The whole file in one Buffer: for small payloads and tests; saveSafetensors streams instead. */
export function encodeSafetensors(tensors: Record<string, StoredTensor>, metadata: Record<string, string> = {}): Buffer {
  const { names, head } = layout(tensors, metadata);
  return Buffer.concat([head, ...names.map((name) => bytesOf(tensors[name].data))]);
}

/** A name or value as it can appear in a one-line message, whatever a corrupt header holds. */
export function showName(v: unknown): string {
  if (typeof v === 'string' && /^[\x20-\x7e]{0,200}$/.test(v)) return v;
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 200 ? `${s.slice(0, 200)}...` : s;
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

interface Entry {
  name: string;
  dtype: Dtype;
  shape: number[];
  count: number;
  begin: number;
  end: number;
}

/** The header length from the first 8 bytes, checked against the file size. */
function headerLength(first8: Buffer, fileBytes: number, source: string): number {
  const n = first8.readBigUInt64LE(0);
  if (n > BigInt(fileBytes - 8)) throw new UserError(`${source}: safetensors header length ${n} reaches beyond the end of the file (${fileBytes} bytes)`);
  if (n > BigInt(MAX_HEADER_BYTES)) throw new UserError(`${source}: safetensors header length ${n} is over the ${MAX_HEADER_BYTES}-byte limit`);
  return Number(n);
}

/**
 * Parses and checks a header against the size of the data that follows it. Like the reference implementation, the
 * tensors must tile the data exactly (no overlap, no gap, nothing after the last), so every byte has one meaning.
 */
function parseHeader(bytes: Uint8Array, dataBytes: number, source: string): { entries: Entry[]; metadata: Record<string, string> } {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new UserError(`${source}: safetensors header is not valid UTF-8`);
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    throw new UserError(`${source}: safetensors header is not JSON (${(e as Error).message.split('\n')[0]})`);
  }
  if (!isObject(header)) throw new UserError(`${source}: safetensors header is not a JSON object`);
  const metadata = header.__metadata__ ?? {};
  if (!isObject(metadata) || !Object.values(metadata).every((v) => typeof v === 'string')) {
    throw new UserError(`${source}: __metadata__: must be an object of strings, got ${showName(metadata)}`);
  }
  const entries: Entry[] = [];
  for (const [name, h] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const where = `${source}: tensor ${showName(name)}`;
    if (!isObject(h)) throw new UserError(`${where}: not an object of dtype, shape and data_offsets`);
    if (h.dtype === undefined) throw new UserError(`${where}: dtype: missing`);
    if (!isDtype(h.dtype)) throw new UserError(`${where}: dtype ${showName(h.dtype)} is not supported (mlactl reads ${Object.keys(DTYPES).join(', ')})`);
    const dtype = h.dtype;
    if (h.shape === undefined) throw new UserError(`${where}: shape: missing`);
    const shape = h.shape;
    if (!Array.isArray(shape) || !shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
      throw new UserError(`${where}: shape ${showName(shape)} is not a list of non-negative integers`);
    }
    const count = (shape as number[]).reduce((a, b) => a * b, 1);
    if (!Number.isSafeInteger(count * 8)) throw new UserError(`${where}: shape [${shape}] is too large for any file`);
    if (h.data_offsets === undefined) throw new UserError(`${where}: data_offsets: missing`);
    const off = h.data_offsets;
    if (!Array.isArray(off) || off.length !== 2 || !off.every((o) => Number.isSafeInteger(o) && o >= 0)) {
      throw new UserError(`${where}: data_offsets ${showName(off)} are not two non-negative integers`);
    }
    const [begin, end] = off as [number, number];
    const range = `data_offsets [${begin}, ${end}]`;
    if (end < begin) throw new UserError(`${where}: ${range} end before they begin`);
    const need = count * DTYPES[dtype].bytes;
    if (end - begin !== need) throw new UserError(`${where}: ${range} hold ${end - begin} bytes, but shape [${shape}] of ${dtype} needs ${need}`);
    if (begin % DTYPES[dtype].bytes !== 0) throw new UserError(`${where}: ${range} start at a byte not a multiple of ${DTYPES[dtype].bytes} (the ${dtype} element size)`);
    if (end > dataBytes) throw new UserError(`${where}: ${range} reach beyond the end of the data (${dataBytes} bytes)`);
    entries.push({ name, dtype, shape: shape as number[], count, begin, end });
  }
  const sorted = [...entries].sort((a, b) => a.begin - b.begin || a.end - b.end);
  let covered = 0;
  let prev: Entry | undefined;
  for (const e of sorted) {
    const where = `${source}: tensor ${showName(e.name)}: data_offsets [${e.begin}, ${e.end}]`;
    if (e.begin < covered) throw new UserError(`${where} overlap tensor ${showName(prev?.name)} [${prev?.begin}, ${prev?.end}]`);
    if (e.begin > covered) throw new UserError(`${where} leave a gap of ${e.begin - covered} bytes after ${prev ? `tensor ${showName(prev.name)}` : 'the header'}`);
    covered = e.end;
    prev = e;
  }
  if (covered !== dataBytes) throw new UserError(`${source}: ${dataBytes - covered} bytes after the last tensor's data (safetensors data has no gaps)`);
  return { entries, metadata: metadata as Record<string, string> };
}

/** Parses a whole file held in memory; loadSafetensors reads a file without holding it whole. */
export function decodeSafetensors(buf: Buffer, source = 'safetensors'): { tensors: Record<string, StoredTensor>; metadata: Record<string, string> } {
  if (buf.length < 8) throw new UserError(`${source}: not a safetensors file (too short: ${buf.length} bytes)`);
  const n = headerLength(buf.subarray(0, 8), buf.length, source);
  const { entries, metadata } = parseHeader(buf.subarray(8, 8 + n), buf.length - 8 - n, source);
  const tensors: Record<string, StoredTensor> = {};
  for (const e of entries) {
    // A copy per tensor: Node's Buffer pool may hand out offsets unaligned for the typed array.
    const data = DTYPES[e.dtype].make(e.count);
    bytesOf(data).set(buf.subarray(8 + n + e.begin, 8 + n + e.end));
    tensors[e.name] = { shape: e.shape, data };
  }
  return { tensors, metadata };
}

/** Fills `into` from the file at `position`, however few bytes each call returns. */
function readAll(fd: number, into: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < into.byteLength) {
    const n = fs.readSync(fd, into, done, Math.min(into.byteLength - done, IO_CHUNK), position + done);
    if (n <= 0) throw new UserError(`${file}: file ended at byte ${position + done} while reading (truncated or changed while being read)`);
    done += n;
  }
}

/** Reads the header, then each tensor at its offset straight into its own typed array. */
export function loadSafetensors(file: string): { tensors: Record<string, StoredTensor>; metadata: Record<string, string> } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UserError(`${file}: file not found`);
    if (code === 'EACCES' || code === 'EPERM') throw new UserError(`permission denied reading ${file}`);
    throw e;
  }
  try {
    const stat = fs.fstatSync(fd);
    if (stat.isDirectory()) throw new UserError(`${file}: is a folder, not a safetensors file`);
    const size = stat.size;
    if (size < 8) throw new UserError(`${file}: not a safetensors file (too short: ${size} bytes)`);
    const first8 = Buffer.alloc(8);
    readAll(fd, first8, 0, file);
    const n = headerLength(first8, size, file);
    const head = Buffer.alloc(n);
    readAll(fd, head, 8, file);
    const { entries, metadata } = parseHeader(head, size - 8 - n, file);
    const tensors: Record<string, StoredTensor> = {};
    for (const e of entries) {
      const data = DTYPES[e.dtype].make(e.count);
      readAll(fd, bytesOf(data), 8 + n + e.begin, file);
      tensors[e.name] = { shape: e.shape, data };
    }
    return { tensors, metadata };
  } finally {
    fs.closeSync(fd);
  }
}

/** Streams the header, then each tensor's bytes, so no buffer of the whole file is ever built. */
export function saveSafetensors(file: string, tensors: Record<string, StoredTensor>, metadata: Record<string, string> = {}): void {
  const { names, head } = layout(tensors, metadata);
  writeAtomically(file, (fd) => {
    writeAll(fd, head, file);
    for (const name of names) writeAll(fd, bytesOf(tensors[name].data), file);
  });
}
