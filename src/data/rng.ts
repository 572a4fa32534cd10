// A small seeded PRNG for data decisions (document split, batch order). Everything is uint32 arithmetic so the
// same seed gives the same numbers on every platform and backend; the state is four numbers, so checkpoints can
// store it as JSON.

const TWO_POW_32 = 0x1_0000_0000;

/** murmur3's finaliser: spreads every input bit over the whole word, so nearby seeds give unrelated streams. */
function avalanche32(value: number): number {
  let h = value >>> 0;
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Split a safe integer into 32-bit words so seeds above 2^32 (or negative) still influence the stream. */
function integerWords(value: number): [number, number] {
  if (!Number.isSafeInteger(value)) throw new Error(`seed must be a safe integer, got ${value}`);
  const low = ((value % TWO_POW_32) + TWO_POW_32) % TWO_POW_32;
  const high = Math.floor(value / TWO_POW_32);
  return [low >>> 0, high >>> 0];
}

/** Combine integers (a seed and stream identifiers such as an epoch) into one well-mixed uint32. */
export function mixSeed(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const part of parts) {
    for (const word of integerWords(part)) {
      h = avalanche32(h ^ avalanche32(word + 0x7f4a7c15));
      h = (Math.imul(h, 5) + 0xe6546b64) >>> 0;
    }
  }
  return avalanche32(h ^ parts.length);
}

/** A uint32 identifying a string (FNV-1a then a finaliser), for deriving per-stratum streams. */
export function hashString(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return avalanche32(h);
}

function rotateLeft(value: number, bits: number): number {
  return ((value << bits) | (value >>> (32 - bits))) >>> 0;
}

/** xoshiro128**: fast, 128-bit state, good statistical quality for shuffling; seeded through splitmix32. */
export class Rng {
  private readonly words: Uint32Array;

  private constructor(words: ArrayLike<number>) {
    this.words = Uint32Array.from(words);
    // The all-zero state is a fixed point of xoshiro; splitmix32 practically never yields it, but a hand-made state might.
    if (this.words.every((w) => w === 0)) this.words[0] = 0x9e3779b9;
  }

  /** A generator for `seed`; extra `stream` numbers select independent streams under the same seed. */
  static fromSeed(seed: number, ...stream: number[]): Rng {
    let x = mixSeed(seed, ...stream);
    const words: number[] = [];
    for (let i = 0; i < 4; i++) {
      x = (x + 0x9e3779b9) >>> 0;
      let z = x;
      z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
      z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
      words.push((z ^ (z >>> 15)) >>> 0);
    }
    return new Rng(words);
  }

  /** Resume from `state()` output (e.g. read back from a checkpoint). */
  static fromState(state: readonly number[]): Rng {
    if (state.length !== 4 || state.some((w) => !Number.isInteger(w) || w < 0 || w >= TWO_POW_32)) {
      throw new Error(`Rng state must be four uint32 numbers, got ${JSON.stringify(state)}`);
    }
    return new Rng(state);
  }

  /** A copy of the 128-bit state as four uint32 numbers (JSON-safe). */
  state(): number[] {
    return Array.from(this.words);
  }

  nextUint32(): number {
    const s = this.words;
    const result = Math.imul(rotateLeft(Math.imul(s[1], 5) >>> 0, 7), 9) >>> 0;
    const shifted = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= shifted;
    s[3] = rotateLeft(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1) with 53 random bits. */
  nextFloat(): number {
    const high = this.nextUint32() >>> 5; // 27 bits
    const low = this.nextUint32() >>> 6; // 26 bits
    return (high * 67108864 + low) / 9007199254740992;
  }

  /** Uniform integer in [0, bound) without modulo bias; bound must be in [1, 2^32]. */
  nextInt(bound: number): number {
    if (!Number.isInteger(bound) || bound < 1 || bound > TWO_POW_32) throw new Error(`nextInt bound must be an integer in [1, 2^32], got ${bound}`);
    // Reject draws from the incomplete last block of size `bound` so every residue is equally likely.
    const limit = TWO_POW_32 - (TWO_POW_32 % bound);
    for (;;) {
      const draw = this.nextUint32();
      if (draw < limit) return draw % bound;
    }
  }

  /** Fisher-Yates shuffle in place; returns the same array. */
  shuffle<T>(items: T[]): T[];
  shuffle(items: Uint32Array): Uint32Array;
  shuffle(items: { length: number; [index: number]: unknown }): unknown {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const held = items[i];
      items[i] = items[j];
      items[j] = held;
    }
    return items;
  }
}
