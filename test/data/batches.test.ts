import { UserError } from '../../src/errors';
import {
  batchHash,
  batchStarts,
  concatenateDocuments,
  makeBatch,
  memoryTokenStore,
  validationWindows,
  windowSlotCount,
} from '../../src/data/batches';

describe('token stores', () => {
  it('concatenates documents with eos after each', () => {
    const store = concatenateDocuments([[1, 2], [], [3]], 9);
    expect(store.length).toBe(6);
    expect(Array.from(store.read(0, 6))).toEqual([1, 2, 9, 9, 3, 9]);
    expect(Array.from(store.read(2, 3))).toEqual([9, 9, 3]);
    expect(() => store.read(4, 3)).toThrow();
  });

  it('reads from a Uint16Array', () => {
    const store = memoryTokenStore(Uint16Array.from([65535, 1, 2]));
    expect(Array.from(store.read(0, 2))).toEqual([65535, 1]);
  });
});

describe('batchStarts', () => {
  const seqLen = 8;
  const storeLength = 8 * 10 + 3; // 10 slots: floor((83 - 1) / 8)

  it('has floor((length - 1) / seqLen) slots', () => {
    expect(windowSlotCount(83, 8)).toBe(10);
    expect(windowSlotCount(81, 8)).toBe(10); // slot 9 ends at token 80 inclusive
    expect(windowSlotCount(80, 8)).toBe(9);
    expect(windowSlotCount(8, 8)).toBe(0);
  });

  it('is a pure function of its arguments', () => {
    const first = batchStarts(1, 3, 0, 4, seqLen, storeLength);
    // Interleave other calls (other seeds and epochs) to exercise the permutation cache.
    for (let seed = 0; seed < 6; seed++) batchStarts(seed, 50, 0, 4, seqLen, storeLength);
    expect(batchStarts(1, 3, 0, 4, seqLen, storeLength)).toEqual(first);
  });

  it('differs between seeds', () => {
    const bySeed = [1, 2, 3].map((seed) => Array.from({ length: 5 }, (_, step) => batchStarts(seed, step, 0, 2, seqLen, storeLength)).flat());
    expect(bySeed[0]).not.toEqual(bySeed[1]);
    expect(bySeed[1]).not.toEqual(bySeed[2]);
  });

  it('visits every slot exactly once per epoch', () => {
    // 10 slots, 5 sequences per step: steps 0-1 are epoch 0, steps 2-3 epoch 1.
    const epoch = (firstStep: number) => [firstStep, firstStep + 1].flatMap((step) => batchStarts(7, step, 0, 5, seqLen, storeLength));
    const allSlots = Array.from({ length: 10 }, (_, k) => k * seqLen);
    const epoch0 = epoch(0);
    const epoch1 = epoch(2);
    expect([...epoch0].sort((a, b) => a - b)).toEqual(allSlots);
    expect([...epoch1].sort((a, b) => a - b)).toEqual(allSlots);
    expect(epoch1).not.toEqual(epoch0);
  });

  it('gives the same windows per step however the step is cut into micro-batches', () => {
    const whole = batchStarts(4, 6, 0, 6, seqLen, storeLength, 1);
    const inThirds = [0, 1, 2].flatMap((micro) => batchStarts(4, 6, micro, 2, seqLen, storeLength, 3));
    expect(inThirds).toEqual(whole);
    // Windows must fit: start + seqLen + 1 <= length.
    for (const start of whole) expect(start + seqLen + 1).toBeLessThanOrEqual(storeLength);
  });

  it('rejects a store too short for one window with a UserError', () => {
    expect(() => batchStarts(1, 0, 0, 2, 8, 8)).toThrow(UserError);
    expect(() => batchStarts(1, 0, 2, 2, 8, 100, 2)).toThrow(/micro/);
  });
});

describe('makeBatch', () => {
  it('builds inputs and targets shifted by one', () => {
    const store = memoryTokenStore(Int32Array.from({ length: 20 }, (_, i) => 100 + i));
    const { inputs, targets } = makeBatch(store, [0, 12], 4);
    expect(Array.from(inputs)).toEqual([100, 101, 102, 103, 112, 113, 114, 115]);
    expect(Array.from(targets)).toEqual([101, 102, 103, 104, 113, 114, 115, 116]);
  });
});

describe('batchHash', () => {
  it('is the first 16 hex digits of sha256 over the comma-joined offsets', () => {
    // Values from `printf '0,5,10' | sha256sum` and `printf '128,0,4096' | sha256sum`.
    expect(batchHash([0, 5, 10])).toBe('ad82ad61366d0917');
    expect(batchHash([128, 0, 4096])).toBe('aaa781f3e39da41d');
    expect(batchHash([0, 10, 5])).not.toBe(batchHash([0, 5, 10]));
  });
});

describe('validationWindows', () => {
  it('spreads non-overlapping windows evenly', () => {
    // 10 slots of 8, room for 4 windows: slots floor(i * 10 / 4) = 0, 2, 5, 7.
    expect(validationWindows(83, 8, 32)).toEqual([0, 16, 40, 56]);
    expect(validationWindows(83, 8, 1000)).toEqual(Array.from({ length: 10 }, (_, k) => k * 8));
    expect(validationWindows(83, 8, 0)).toHaveLength(10);
    expect(validationWindows(83, 8, 3)).toEqual([0]);
    expect(validationWindows(5, 8, 100)).toEqual([]);
  });
});
