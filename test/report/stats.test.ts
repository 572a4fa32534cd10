import { aggregate, cleanSeries, interpolateAt, meanCurve, thin, tokenEma } from '../../src/report/stats';

describe('aggregate', () => {
  test('mean and sample std over seeds, ignoring missing values', () => {
    // 2.9, 3.0, 3.1: mean 3.0, squared deviations 0.01 + 0 + 0.01 = 0.02, / (3 - 1) = 0.01, sqrt = 0.1
    const agg = aggregate([2.9, null, 3.0, 3.1, NaN]);
    expect(agg.count).toBe(3);
    expect(agg.mean).toBeCloseTo(3.0, 12);
    expect(agg.std).toBeCloseTo(0.1, 12);
  });

  test('one value has an unknown spread; none has no mean', () => {
    expect(aggregate([4.2])).toEqual({ mean: 4.2, std: null, count: 1 });
    expect(aggregate([null, undefined])).toEqual({ mean: null, std: null, count: 0 });
  });
});

describe('token alignment', () => {
  test('interpolateAt is linear between logged token counts and null outside them', () => {
    const series = [{ tokens: 3000, value: 4.2 }, { tokens: 9000, value: 3.6 }, { tokens: 12000, value: 3.0 }];
    // 10000 lies a third of the way from 9000 to 12000: 3.6 + (1/3)(3.0 - 3.6) = 3.4
    expect(interpolateAt(series, 10000)).toBeCloseTo(3.4, 12);
    expect(interpolateAt(series, 9000)).toBe(3.6);
    expect(interpolateAt(series, 2999)).toBeNull();
    expect(interpolateAt(series, 12001)).toBeNull();
    expect(interpolateAt([], 5)).toBeNull();
  });

  test('cleanSeries sorts by tokens, drops missing values and keeps the last of repeated tokens', () => {
    const cleaned = cleanSeries([{ tokens: 2000, value: 2 }, { tokens: 1000, value: 1 }, { tokens: 3000, value: null }, { tokens: 2000, value: 2.5 }]);
    expect(cleaned).toEqual([{ tokens: 1000, value: 1 }, { tokens: 2000, value: 2.5 }]);
  });

  test('meanCurve averages runs logged at different token counts, each only within its own range', () => {
    const a = [{ tokens: 1000, value: 4 }, { tokens: 2000, value: 3 }, { tokens: 3000, value: 2 }];
    const b = [{ tokens: 1500, value: 5 }, { tokens: 4500, value: 2 }];
    const curve = meanCurve([a, b]);
    expect(curve.map((p) => p.tokens)).toEqual([1000, 1500, 2000, 3000, 4500]);
    // 1000: only a (b starts at 1500)
    expect(curve[0]).toEqual({ tokens: 1000, mean: 4, count: 1 });
    // 1500: a halfway 4→3 = 3.5, b = 5 → 4.25
    expect(curve[1].mean).toBeCloseTo(4.25, 12);
    // 2000: a = 3, b = 5 + (500/3000)(2 - 5) = 4.5 → 3.75
    expect(curve[2].mean).toBeCloseTo(3.75, 12);
    // 3000: a = 2, b = 5 + (1500/3000)(-3) = 3.5 → 2.75
    expect(curve[3].mean).toBeCloseTo(2.75, 12);
    expect(curve[4]).toEqual({ tokens: 4500, mean: 2, count: 1 });
  });

  test('tokenEma weighs by tokens elapsed, not by log lines', () => {
    // tau = 1000 tokens. Points 1000 tokens apart decay by e^-1 per point.
    const e = Math.exp(-1);
    const smoothed = tokenEma([{ tokens: 0, value: 1 }, { tokens: 1000, value: 3 }, { tokens: 3000, value: 5 }], 1000);
    expect(smoothed[0].value).toBe(1);
    // (1·e + 3) / (e + 1)
    expect(smoothed[1].value).toBeCloseTo((e + 3) / (e + 1), 12);
    // 2000 tokens later the old sum decays by e^-2: ((e + 3)·e² + 5) / ((e + 1)·e² + 1)
    const e2 = Math.exp(-2);
    expect(smoothed[2].value).toBeCloseTo(((e + 3) * e2 + 5) / ((e + 1) * e2 + 1), 12);
  });

  test('thin keeps every k-th item and the last', () => {
    expect(thin([1, 2, 3, 4, 5, 6, 7], 3)).toEqual([1, 4, 7]);
    expect(thin([1, 2, 3, 4, 5, 6, 7, 8], 3)).toEqual([1, 4, 7, 8]);
    expect(thin([1, 2], 3)).toEqual([1, 2]);
  });
});
