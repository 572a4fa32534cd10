import { hashString, mixSeed, Rng } from '../../src/data/rng';

describe('Rng (xoshiro128**)', () => {
  it('matches the xoshiro128** recurrence worked by hand from state [1, 2, 3, 4]', () => {
    // out = rotl(s1 * 5, 7) * 9: rotl(10, 7) * 9 = 11520; the next state has s1 = 0 (out 0), then s1 = 1029.
    const rng = Rng.fromState([1, 2, 3, 4]);
    expect(rng.nextUint32()).toBe(11520);
    expect(rng.state()).toEqual([7, 0, 1026, 12288]);
    expect(rng.nextUint32()).toBe(0);
    expect(rng.nextUint32()).toBe(1029 * 5 * 128 * 9);
  });

  it('resumes exactly from a saved state', () => {
    const rng = Rng.fromSeed(42);
    for (let i = 0; i < 10; i++) rng.nextUint32();
    const saved = rng.state();
    const expected = Array.from({ length: 20 }, () => rng.nextUint32());
    const resumed = Rng.fromState(JSON.parse(JSON.stringify(saved)));
    expect(Array.from({ length: 20 }, () => resumed.nextUint32())).toEqual(expected);
  });

  it('gives the same stream for the same seed and different streams for different seeds or stream ids', () => {
    const draw = (rng: Rng) => Array.from({ length: 8 }, () => rng.nextUint32());
    expect(draw(Rng.fromSeed(7))).toEqual(draw(Rng.fromSeed(7)));
    expect(draw(Rng.fromSeed(7))).not.toEqual(draw(Rng.fromSeed(8)));
    expect(draw(Rng.fromSeed(7, 1))).not.toEqual(draw(Rng.fromSeed(7, 2)));
    // Seeds above 2^32 must not collapse onto their low 32 bits.
    expect(draw(Rng.fromSeed(5))).not.toEqual(draw(Rng.fromSeed(5 + 2 ** 32)));
    expect(mixSeed(1, 2)).not.toBe(mixSeed(2, 1));
    expect(hashString('a')).not.toBe(hashString('b'));
  });

  it('draws nextInt uniformly within the bound', () => {
    const rng = Rng.fromSeed(3);
    const counts = new Array(6).fill(0);
    const n = 60000;
    for (let i = 0; i < n; i++) counts[rng.nextInt(6)]++;
    // Chi-square with 5 degrees of freedom; 20.5 is the 0.999 quantile.
    const chiSquare = counts.reduce((sum, c) => sum + (c - n / 6) ** 2 / (n / 6), 0);
    expect(chiSquare).toBeLessThan(20.5);
    expect(() => rng.nextInt(0)).toThrow();
  });

  it('draws floats in [0, 1) with mean near 1/2', () => {
    const rng = Rng.fromSeed(11);
    let sum = 0;
    for (let i = 0; i < 10000; i++) {
      const x = rng.nextFloat();
      expect(x >= 0 && x < 1).toBe(true);
      sum += x;
    }
    // Standard error of the mean is sqrt(1/12 / 10000) ~= 0.0029; allow 5 of them.
    expect(Math.abs(sum / 10000 - 0.5)).toBeLessThan(0.015);
  });

  it('shuffles into a permutation', () => {
    const items = Array.from({ length: 100 }, (_, i) => i);
    const shuffled = Rng.fromSeed(1).shuffle([...items]);
    expect(shuffled).not.toEqual(items);
    expect([...shuffled].sort((a, b) => a - b)).toEqual(items);
  });

  it('rejects malformed states', () => {
    expect(() => Rng.fromState([1, 2, 3])).toThrow();
    expect(() => Rng.fromState([1, 2, 3, -1])).toThrow();
    expect(() => Rng.fromState([1, 2, 3, 2 ** 32])).toThrow();
  });
});
