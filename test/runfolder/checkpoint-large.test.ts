// LARGE FILE TEST: writes a 2.1 GiB safetensors file to the temp folder and reads it back (about 4.3 GiB of memory
// at the peak, 2.1 GiB of disk, tens of seconds). It is the only check that files over 2 GiB (paper-400m's
// checkpoints are 3 GiB) get past Node's 2 GiB limit on one write or read call; the file is deleted in afterAll.
import * as os from 'os';
import * as path from 'path';
import fs = require('fs');
import { loadSafetensors, saveSafetensors } from '../../src/runfolder/safetensors';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-large-'));
const file = path.join(dir, 'big.safetensors');
const BIG = Math.ceil((2.1 * 2 ** 30) / 4); // F32 values: 2.1 GiB, past both 2^31 bytes and Node's Buffer pool

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test('LARGE: a 2.1 GiB tensor and one after it are written and read back exactly (file > 2 GiB)', () => {
  let big: Float32Array | null = new Float32Array(BIG);
  const bits = new Uint32Array(big.buffer);
  for (let i = 0; i < BIG; i++) bits[i] = i; // every value distinct, so a misplaced chunk shows
  const tail = Int32Array.of(-7, 11, 13);
  saveSafetensors(file, { big: { shape: [BIG], data: big }, tail: { shape: [3], data: tail } }, { note: 'large' });

  // The bytes on disk, read at a few positions without the reader: header, first, chunk-border and last values.
  const size = fs.statSync(file).size;
  const fd = fs.openSync(file, 'r');
  const len = Buffer.alloc(8);
  fs.readSync(fd, len, 0, 8, 0);
  const n = Number(len.readBigUInt64LE(0));
  const header = Buffer.alloc(n);
  fs.readSync(fd, header, 0, n, 8);
  const h = JSON.parse(header.toString('utf8'));
  expect(h.big.data_offsets).toEqual([0, BIG * 4]);
  expect(h.tail.data_offsets).toEqual([BIG * 4, BIG * 4 + 12]);
  expect(size).toBe(8 + n + BIG * 4 + 12);
  expect(size).toBeGreaterThan(2 ** 31);
  const at = (byte: number) => {
    const b = Buffer.alloc(4);
    fs.readSync(fd, b, 0, 4, 8 + n + byte);
    return b.readUInt32LE(0);
  };
  for (const i of [0, 1, 2 ** 28 - 1, 2 ** 28, 2 ** 29 - 1, 2 ** 29, BIG - 1]) expect(at(i * 4)).toBe(i);
  expect(at(BIG * 4 + 8) | 0).toBe(13);
  fs.closeSync(fd);

  const keep = Buffer.from(big.buffer, 0, 4096);
  const sample = Buffer.from(keep); // a copy, so the 2.1 GiB array can go before the reader allocates its own
  big = null;

  const { tensors, metadata } = loadSafetensors(file);
  expect(metadata).toEqual({ note: 'large' });
  expect(tensors.big.shape).toEqual([BIG]);
  expect(Array.from(tensors.tail.data)).toEqual([-7, 11, 13]);
  const back = new Uint32Array(tensors.big.data.buffer, tensors.big.data.byteOffset, BIG);
  expect(Buffer.from(back.buffer, back.byteOffset, 4096).equals(sample)).toBe(true);
  for (const i of [2 ** 28 - 1, 2 ** 28, 2 ** 29 - 1, 2 ** 29, BIG - 2, BIG - 1]) expect(back[i]).toBe(i);
  // Every value, in a loop cheap enough for half a billion entries.
  let wrong = -1;
  for (let i = 0; i < BIG; i++) {
    if (back[i] !== i) {
      wrong = i;
      break;
    }
  }
  expect(wrong).toBe(-1);
});
