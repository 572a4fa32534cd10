import { Rng } from '../data/rng';

/** The q-quantile (0..1) of samples, interpolating linearly between order statistics (numpy's default). */
export function quantile(samples: readonly number[], q: number): number {
  if (samples.length === 0) return NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const at = q * (sorted.length - 1);
  const lo = Math.floor(at);
  const hi = Math.ceil(at);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (at - lo);
}

/**
 * A percentile-bootstrap interval for the median: resample with replacement, take each resample's median, and
 * return the (1-level)/2 and (1+level)/2 quantiles of those medians. Seeded, so a result file reproduces.
 */
export function bootstrapMedianInterval(samples: readonly number[], level = 0.95, resamples = 2000, seed = 1): [number, number] {
  if (samples.length === 0) return [NaN, NaN];
  const rng = Rng.fromSeed(seed, samples.length);
  const medians: number[] = [];
  const draw = new Array<number>(samples.length);
  for (let r = 0; r < resamples; r++) {
    for (let i = 0; i < samples.length; i++) draw[i] = samples[rng.nextInt(samples.length)];
    medians.push(quantile(draw, 0.5));
  }
  return [quantile(medians, (1 - level) / 2), quantile(medians, (1 + level) / 2)];
}
