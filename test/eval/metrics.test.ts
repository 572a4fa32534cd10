import { aggregateMetric, argmax, chanceLevel, meanWithStderr, METRICS, predictChoice } from '../../src/eval/metrics';

describe('metrics', () => {
  it('mean with stderr = sample std (n-1) / sqrt(n)', () => {
    // values 1, 2, 3, 6: mean 3, squared deviations 4+1+0+9 = 14, variance 14/3, stderr sqrt(14/3)/2.
    const { value, stderr } = meanWithStderr([1, 2, 3, 6]);
    expect(value).toBe(3);
    expect(stderr).toBeCloseTo(Math.sqrt(14 / 3) / 2, 14);
    expect(meanWithStderr([0.5])).toEqual({ value: 0.5, stderr: null });
    expect(meanWithStderr([1, 1, 1]).stderr).toBe(0);
  });

  it('perplexity aggregates item log-likelihoods as exp(-mean), stderr by the delta method', () => {
    // log-likelihoods -1 and -3: mean -2, stderr |(-1)-(-3)| / 2 = 1; perplexity e^2 with stderr e^2 * 1.
    const result = aggregateMetric('perplexity', [-1, -3]);
    expect(result.value).toBeCloseTo(Math.exp(2), 12);
    expect(result.stderr).toBeCloseTo(Math.exp(2), 12);
    expect(aggregateMetric('acc', [1, 0, 1, 1]).value).toBe(0.75);
  });

  it('states direction and aggregation per metric', () => {
    expect(METRICS.acc).toMatchObject({ higherIsBetter: true, aggregation: 'mean' });
    expect(METRICS.acc_norm).toMatchObject({ higherIsBetter: true, aggregation: 'mean' });
    expect(METRICS.acc_bytes).toMatchObject({ higherIsBetter: true, aggregation: 'mean' });
    expect(METRICS.perplexity).toMatchObject({ higherIsBetter: false, aggregation: 'perplexity' });
  });

  it('argmax takes the first of tied maxima', () => {
    expect(argmax([-3, -1, -1, -2])).toBe(1);
    expect(argmax([-Infinity, -5])).toBe(1);
  });

  it('normalises by the characters and by the UTF-8 bytes of the choice text', () => {
    // sums -4 vs -5 (first); per char -4/2 = -2 vs -5/5 = -1 (second); per byte -4/2 = -2 vs -5/10 = -0.5 (second).
    expect(predictChoice([-4, -5], ['ab', 'ééééé'])).toEqual({ pred: 0, predNorm: 1, predBytes: 1 });
    // per char -6/3 = -2 vs -3/2 = -1.5 (second); per byte -6/6 = -1 vs -3/2 = -1.5 (first).
    expect(predictChoice([-6, -3], ['ééé', 'ab'])).toEqual({ pred: 1, predNorm: 1, predBytes: 0 });
  });

  it('counts characters as Python does (code points), so an emoji is one character', () => {
    // per char -5/2 = -2.5 vs -6/3 = -2 (second); by UTF-16 units it would be -5/4 = -1.25 (first).
    // per byte -5/8 vs -6/3 (first).
    expect(predictChoice([-5, -6], ['😀😀', 'abc'])).toEqual({ pred: 0, predNorm: 1, predBytes: 0 });
  });

  it('chance is the mean of 1 / choices', () => {
    expect(chanceLevel([4, 4, 2])).toBeCloseTo((0.25 + 0.25 + 0.5) / 3, 15);
  });
});
