/**
 * The safetensors container: an 8-byte little-endian header length, a JSON header naming each tensor's dtype,
 * shape and byte range, then the raw little-endian data. Only what mlactl stores is supported (F32, I32, U8).
 */
import * as fs from 'fs';
import { UserError } from '../errors';

export type StoredArray = Float32Array | Int32Array | Uint8Array;
export interface StoredTensor {
  shape: number[];
  data: StoredArray;
}

const DTYPES: Record<string, { code: string; make(buf: ArrayBuffer, off: number, n: number): StoredArray; bytes: number }> = {
  F32: { code: 'F32', bytes: 4, make: (b, o, n) => new Float32Array(b, o, n) },
  I32: { code: 'I32', bytes: 4, make: (b, o, n) => new Int32Array(b, o, n) },
  U8: { code: 'U8', bytes: 1, make: (b, o, n) => new Uint8Array(b, o, n) },
};

function dtypeOf(a: StoredArray): string {
  if (a instanceof Float32Array) return 'F32';
  if (a instanceof Int32Array) return 'I32';
  return 'U8';
}

/** Serialise to a Buffer; tensors are laid out in name order so identical content gives identical bytes. */
export function encodeSafetensors(tensors: Record<string, StoredTensor>, metadata: Record<string, string> = {}): Buffer {
  const names = Object.keys(tensors).sort();
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const name of names) {
    const t = tensors[name];
    const n = t.shape.reduce((a, b) => a * b, 1);
    if (n !== t.data.length) throw new Error(`safetensors: ${name} has ${t.data.length} values for shape [${t.shape}]`);
    header[name] = { dtype: dtypeOf(t.data), shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    offset += t.data.byteLength;
  }
  let json = JSON.stringify(header);
  // Pad with spaces so the data starts 8-byte aligned, which lets readers view it without copying.
  json += ' '.repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);
  const head = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + head.length + offset);
  out.writeBigUInt64LE(BigInt(head.length), 0);
  head.copy(out, 8);
  let pos = 8 + head.length;
  for (const name of names) {
    const d = tensors[name].data;
    Buffer.from(d.buffer, d.byteOffset, d.byteLength).copy(out, pos);
    pos += d.byteLength;
  }
  return out;
}

export function decodeSafetensors(buf: Buffer, source = 'safetensors'): { tensors: Record<string, StoredTensor>; metadata: Record<string, string> } {
  if (buf.length < 8) throw new UserError(`${source}: not a safetensors file (too short)`);
  const n = Number(buf.readBigUInt64LE(0));
  if (8 + n > buf.length) throw new UserError(`${source}: truncated safetensors header`);
  let header: Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
  try {
    header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8'));
  } catch {
    throw new UserError(`${source}: unreadable safetensors header`);
  }
  const metadata = (header.__metadata__ ?? {}) as unknown as Record<string, string>;
  const dataStart = 8 + n;
  // Copy into a fresh aligned buffer: Node's Buffer pool may hand out unaligned offsets.
  const body = new Uint8Array(buf.length - dataStart);
  body.set(buf.subarray(dataStart));
  const tensors: Record<string, StoredTensor> = {};
  for (const [name, h] of Object.entries(header)) {
    if (name === '__metadata__') continue;
    const dt = DTYPES[h.dtype];
    if (!dt) throw new UserError(`${source}: tensor ${name} has unsupported dtype ${h.dtype}`);
    const [a, b] = h.data_offsets;
    const count = h.shape.reduce((x, y) => x * y, 1);
    if (b - a !== count * dt.bytes || b > body.length) throw new UserError(`${source}: tensor ${name} has inconsistent offsets`);
    tensors[name] = { shape: h.shape, data: dt.make(body.buffer, a, count) };
  }
  return { tensors, metadata };
}

/** Write atomically: a crash mid-write leaves the previous file (or none), never a torn one. */
export function writeFileAtomic(file: string, data: Buffer | string): void {
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = fs.openSync(tmp, 'w');
  try {
    if (typeof data === 'string') fs.writeSync(fd, data);
    else fs.writeSync(fd, data);
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

export function saveSafetensors(file: string, tensors: Record<string, StoredTensor>, metadata: Record<string, string> = {}): void {
  writeFileAtomic(file, encodeSafetensors(tensors, metadata));
}

export function loadSafetensors(file: string): { tensors: Record<string, StoredTensor>; metadata: Record<string, string> } {
  if (!fs.existsSync(file)) throw new UserError(`${file}: file not found`);
  return decodeSafetensors(fs.readFileSync(file), file);
}
