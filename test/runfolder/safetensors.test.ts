// The safetensors container on its own: what the reader refuses, and that the streaming writer keeps the bytes and
// survives short writes and full disks without touching the previous file.
import { createHash } from 'crypto';
import * as os from 'os';
import * as path from 'path';
// The real module object: the code under test calls through it, so jest.spyOn(fs, ...) reaches it.
import fs = require('fs');
import { UserError } from '../../src/errors';
import { paramInfos } from '../../src/model/params';
import { writeFileAtomic } from '../../src/runfolder/atomic';
import { decodeSafetensors, encodeSafetensors, loadSafetensors, saveSafetensors, type StoredTensor } from '../../src/runfolder/safetensors';
import { tinySpec } from '../helpers';

const tmp = (): string => fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-st-'));

afterEach(() => jest.restoreAllMocks());

/** A safetensors file from a hand-written header (object or raw text) and data bytes. */
function craft(header: unknown, data: Buffer = Buffer.alloc(0), headerLength?: bigint): Buffer {
  const json = Buffer.isBuffer(header) ? header : Buffer.from(typeof header === 'string' ? header : JSON.stringify(header), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(headerLength ?? BigInt(json.length));
  return Buffer.concat([len, json, data]);
}

const F32 = (shape: number[], a: number, b: number) => ({ dtype: 'F32', shape, data_offsets: [a, b] });

// Each case: a header, its data bytes, the tensor the message must name ('' = none) and what it must say.
const BAD: [string, unknown, number, string, RegExp][] = [
  ['negative offsets', { w: F32([1], -4, 0) }, 4, 'w', /data_offsets/],
  ['non-integer offsets', { w: F32([1], 0.5, 4.5) }, 8, 'w', /data_offsets/],
  ['null offsets', { w: { dtype: 'F32', shape: [1], data_offsets: null } }, 4, 'w', /data_offsets/],
  ['missing offsets', { w: { dtype: 'F32', shape: [1] } }, 4, 'w', /data_offsets: missing/],
  ['three offsets', { w: { dtype: 'F32', shape: [1], data_offsets: [0, 4, 8] } }, 8, 'w', /data_offsets/],
  ['end before begin', { w: F32([0], 4, 0) }, 4, 'w', /data_offsets/],
  ['offsets misaligned to the dtype', { a: { dtype: 'U8', shape: [2], data_offsets: [0, 2] }, b: F32([1], 2, 6) }, 6, 'b', /not a multiple of 4/],
  ['overlapping tensors', { a: F32([2], 0, 8), b: F32([1], 4, 8) }, 8, 'b', /overlap/],
  ['a hole between tensors', { a: F32([1], 0, 4), b: F32([1], 8, 12) }, 12, 'b', /gap/],
  ['offsets beyond the file', { w: F32([2], 0, 8) }, 4, 'w', /beyond the end/],
  ['offsets not matching shape x dtype', { w: F32([2], 0, 4) }, 4, 'w', /4 bytes.*shape \[2\].*8/],
  ['a missing shape', { w: { dtype: 'F32', data_offsets: [0, 4] } }, 4, 'w', /shape: missing/],
  ['a negative dimension', { w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4, 'w', /shape/],
  ['a fractional dimension', { w: { dtype: 'F32', shape: [0.5, 8], data_offsets: [0, 16] } }, 16, 'w', /shape/],
  ['a string shape', { w: { dtype: 'F32', shape: '4', data_offsets: [0, 16] } }, 16, 'w', /shape/],
  ['a missing dtype', { w: { shape: [1], data_offsets: [0, 4] } }, 4, 'w', /dtype: missing/],
  ['an unknown dtype', { w: { dtype: 'F33', shape: [1], data_offsets: [0, 4] } }, 4, 'w', /dtype/],
  ['an unsupported dtype', { w: { dtype: 'F16', shape: [2], data_offsets: [0, 4] } }, 4, 'w', /dtype F16/],
  ['a non-object entry', { w: 5 }, 0, 'w', /not an object/],
  ['non-string metadata', { __metadata__: { format: 1 } }, 0, '__metadata__', /string/],
  ['trailing bytes after the last tensor', { w: F32([1], 0, 4) }, 8, '', /4 bytes after the last tensor/],
  ['a header that is an array', [1, 2], 0, '', /header/],
];

function expectRefusal(fn: () => unknown, source: string, tensor: string, what: RegExp): void {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(UserError);
  const msg = (err as Error).message;
  expect(msg.startsWith(`${source}: `)).toBe(true);
  if (tensor) expect(msg).toContain(tensor);
  expect(msg).toMatch(what);
  expect(msg).not.toContain('\n');
}

describe.each([
  ['loadSafetensors (file)', (buf: Buffer, file: string) => (fs.writeFileSync(file, buf), loadSafetensors(file))],
  ['decodeSafetensors (buffer)', (buf: Buffer, file: string) => decodeSafetensors(buf, file)],
] as const)('%s refuses a malformed file with one line naming the file and the tensor', (_name, read) => {
  const dir = tmp();
  const file = path.join(dir, 'model.safetensors');

  test.each(BAD)('%s', (_case, header, dataBytes, tensor, what) => {
    expectRefusal(() => read(craft(header, Buffer.alloc(dataBytes)), file), file, tensor, what);
  });

  test('a header length beyond the file', () => {
    expectRefusal(() => read(craft({ w: F32([1], 0, 4) }, Buffer.alloc(4), 1000n), file), file, '', /header length 1000.*beyond/);
  });

  test('a header length beyond any number', () => {
    expectRefusal(() => read(craft({}, Buffer.alloc(0), 2n ** 63n), file), file, '', /header length/);
  });

  test('a file shorter than the length field', () => {
    expectRefusal(() => read(Buffer.alloc(5), file), file, '', /too short/);
  });

  test('a header that is not JSON', () => {
    expectRefusal(() => read(craft('{"w": {"dtype": "F32",'), file), file, '', /header is not JSON/);
  });

  test('a header that is not UTF-8', () => {
    expectRefusal(() => read(craft(Buffer.from([0x7b, 0xff, 0x7d])), file), file, '', /header/);
  });
});

/** Deterministic tensors of every kind mlactl stores: the model's F32 weights and the optimizer's I32 step scalar. */
function goldenTensors(): Record<string, StoredTensor> {
  const t: Record<string, StoredTensor> = {};
  paramInfos(tinySpec({ variant: 'qk-norm', G: 2, dq: 6 })).forEach((p, k) => {
    const n = p.shape.reduce((a, b) => a * b, 1);
    t[p.name] = { shape: p.shape, data: Float32Array.from({ length: n }, (_, j) => Math.sin(k * 1000 + j)) };
  });
  t.step = { shape: [], data: Int32Array.of(7) };
  return t;
}
// sha256 of the bytes the single-Buffer encoder wrote for goldenTensors() before the writer streamed.
const GOLDEN_SHA256 = 'b2d9ce652cae2a2d99512be02067dcc2458a40c40801a6136d32d29fc04e288a';
const GOLDEN_BYTES = 48364;
const sha256 = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

describe('the streaming writer and the positioned reader', () => {
  test('write the same bytes as the old in-memory encoder', () => {
    const file = path.join(tmp(), 'model.safetensors');
    saveSafetensors(file, goldenTensors(), { format: 'mlactl-mla/1' });
    const bytes = fs.readFileSync(file);
    expect(bytes.length).toBe(GOLDEN_BYTES);
    expect(sha256(bytes)).toBe(GOLDEN_SHA256);
    expect(sha256(encodeSafetensors(goldenTensors(), { format: 'mlactl-mla/1' }))).toBe(GOLDEN_SHA256);
  });

  test('read back every tensor exactly, one positioned read per tensor, never the whole file', () => {
    const file = path.join(tmp(), 'model.safetensors');
    const golden = goldenTensors();
    golden.empty = { shape: [0, 3], data: new Float32Array(0) };
    saveSafetensors(file, golden, { format: 'mlactl-mla/1' });
    const whole = jest.spyOn(fs, 'readFileSync');
    const reads = jest.spyOn(fs, 'readSync');
    const { tensors, metadata } = loadSafetensors(file);
    expect(whole).not.toHaveBeenCalled();
    // The length field, the header, then one read per non-empty tensor.
    expect(reads).toHaveBeenCalledTimes(2 + Object.keys(golden).length - 1);
    expect(metadata).toEqual({ format: 'mlactl-mla/1' });
    expect(Object.keys(tensors).sort()).toEqual(Object.keys(golden).sort());
    for (const [name, t] of Object.entries(golden)) {
      expect(tensors[name].shape).toEqual(t.shape);
      expect(tensors[name].data.constructor).toBe(t.data.constructor);
      expect(Buffer.from(tensors[name].data.buffer, tensors[name].data.byteOffset, tensors[name].data.byteLength).equals(Buffer.from(t.data.buffer))).toBe(true);
    }
  });

  test('short writes: the writer loops until every byte is written', () => {
    const file = path.join(tmp(), 'model.safetensors');
    const real = fs.writeSync;
    const calls = jest.spyOn(fs, 'writeSync').mockImplementation(((fd: number, buf: Uint8Array, off?: number, len?: number) =>
      real(fd, buf, off ?? 0, Math.min(len ?? buf.byteLength - (off ?? 0), 1000))) as typeof fs.writeSync);
    saveSafetensors(file, goldenTensors(), { format: 'mlactl-mla/1' });
    expect(calls.mock.calls.length).toBeGreaterThan(GOLDEN_BYTES / 1000);
    calls.mockRestore();
    expect(sha256(fs.readFileSync(file))).toBe(GOLDEN_SHA256);
  });

  test.each([
    ['a full disk', Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC' }), /^disk full while writing \S*model\.safetensors$/],
    ['a write of 0 bytes', 0, /made no progress/],
  ])('%s mid-file: the previous file stays, no temporary is left', (_case, failure, what) => {
    const dir = tmp();
    const file = path.join(dir, 'model.safetensors');
    fs.writeFileSync(file, 'the good old file');
    const real = fs.writeSync;
    let n = 0;
    jest.spyOn(fs, 'writeSync').mockImplementation(((...args: Parameters<typeof fs.writeSync>) => {
      if (++n < 3) return (real as (...a: unknown[]) => number)(...args);
      if (typeof failure === 'number') return failure;
      throw failure;
    }) as typeof fs.writeSync);
    let err: unknown;
    try {
      saveSafetensors(file, goldenTensors(), { format: 'mlactl-mla/1' });
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toMatch(what);
    expect(fs.readFileSync(file, 'utf8')).toBe('the good old file');
    expect(fs.readdirSync(dir)).toEqual(['model.safetensors']);
  });

  test('a tensor that would break its dtype alignment is a programming error, not a file', () => {
    const file = path.join(tmp(), 'x.safetensors');
    expect(() => saveSafetensors(file, { a: { shape: [3], data: new Uint8Array(3) }, b: { shape: [1], data: new Float32Array(1) } })).toThrow(/b.*align/);
    expect(fs.existsSync(file)).toBe(false);
  });
});

describe('writeFileAtomic', () => {
  test('short writes: loops until everything is written, fsyncs the file and the folder', () => {
    const file = path.join(tmp(), 'state.json');
    const text = 'x'.repeat(5000) + 'é\n';
    const real = fs.writeSync;
    const writes = jest.spyOn(fs, 'writeSync').mockImplementation(((fd: number, buf: Uint8Array, off?: number, len?: number) =>
      real(fd, buf, off ?? 0, Math.min(len ?? buf.byteLength - (off ?? 0), 7))) as typeof fs.writeSync);
    const syncs = jest.spyOn(fs, 'fsyncSync');
    writeFileAtomic(file, text);
    expect(writes.mock.calls.length).toBeGreaterThan(700);
    expect(syncs).toHaveBeenCalledTimes(2);
    writes.mockRestore();
    expect(fs.readFileSync(file, 'utf8')).toBe(text);
  });

  test.each([
    ['ENOSPC', /^disk full while writing \S*state\.json$/],
    ['EDQUOT', /disk full while writing/],
    ['EACCES', /permission denied writing/],
    ['EROFS', /read-only file system/],
  ])('%s: one-line UserError naming the file; the previous file stays, no temporary is left', (code, what) => {
    const dir = tmp();
    const file = path.join(dir, 'state.json');
    fs.writeFileSync(file, '{"good": "old"}\n');
    jest.spyOn(fs, 'writeSync').mockImplementation(() => {
      throw Object.assign(new Error(`${code}: failure, write`), { code });
    });
    let err: unknown;
    try {
      writeFileAtomic(file, '{"new": 1}\n');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(UserError);
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toMatch(what);
    expect((err as Error).message).not.toContain('\n');
    expect(fs.readFileSync(file, 'utf8')).toBe('{"good": "old"}\n');
    expect(fs.readdirSync(dir)).toEqual(['state.json']);
  });

  test('a write that makes no progress is refused, not looped on forever', () => {
    const dir = tmp();
    const file = path.join(dir, 'state.json');
    fs.writeFileSync(file, 'old');
    jest.spyOn(fs, 'writeSync').mockReturnValue(0);
    expect(() => writeFileAtomic(file, 'new')).toThrow(/state\.json.*made no progress/);
    expect(fs.readFileSync(file, 'utf8')).toBe('old');
    expect(fs.readdirSync(dir)).toEqual(['state.json']);
  });

  test('EACCES when the temporary cannot be created names the file', () => {
    const dir = tmp();
    const file = path.join(dir, 'state.json');
    jest.spyOn(fs, 'openSync').mockImplementation(() => {
      throw Object.assign(new Error('EACCES: permission denied, open'), { code: 'EACCES' });
    });
    expect(() => writeFileAtomic(file, 'x')).toThrow(new UserError(`permission denied writing ${file}`));
  });
});
