import type { MetricName } from './types';

/**
 * How a metric turns per-item values into one number. `mean`: the items are 0/1 correctness (or any score)
 * and the task value is their mean. `perplexity`: the items are per-item log-likelihoods and the task value is
 * exp(-mean), as lm-evaluation-harness reports LAMBADA perplexity.
 */
export type Aggregation = 'mean' | 'perplexity';

export interface MetricDefinition {
  name: MetricName;
  higherIsBetter: boolean;
  aggregation: Aggregation;
  description: string;
}

export const METRICS: Readonly<Record<MetricName, MetricDefinition>> = {
  acc: {
    name: 'acc',
    higherIsBetter: true,
    aggregation: 'mean',
    description: 'fraction of items whose gold choice has the highest summed log-probability (LAMBADA: whose target is the greedy continuation)',
  },
  acc_norm: {
    name: 'acc_norm',
    higherIsBetter: true,
    aggregation: 'mean',
    description: 'as acc, with each choice\'s log-probability divided by the character length of the choice (without the delimiter)',
  },
  acc_bytes: {
    name: 'acc_bytes',
    higherIsBetter: true,
    aggregation: 'mean',
    description: 'as acc, with each choice\'s log-probability divided by the UTF-8 byte length of the choice (without the delimiter)',
  },
  perplexity: {
    name: 'perplexity',
    higherIsBetter: false,
    aggregation: 'perplexity',
    description: 'exp(-mean over items of the target\'s log-probability)',
  },
};

export interface MetricValue {
  value: number;
  /** Standard error of `value`; null with fewer than two items. */
  stderr: number | null;
}

/** Mean with standard error sample_std / sqrt(n), the sample std taken with the n-1 denominator. */
export function meanWithStderr(values: readonly number[]): MetricValue {
  const n = values.length;
  if (n === 0) return { value: NaN, stderr: null };
  const mean = values.reduce((sum, v) => sum + v, 0) / n;
  if (n < 2) return { value: mean, stderr: null };
  const sumSquares = values.reduce((sum, v) => sum + (v - mean) * (v - mean), 0);
  return { value: mean, stderr: Math.sqrt(sumSquares / (n - 1)) / Math.sqrt(n) };
}

/** Aggregate per-item values of one metric. Perplexity's stderr comes from the delta method: d exp(-m) = exp(-m) dm. */
export function aggregateMetric(metric: MetricName, itemValues: readonly number[]): MetricValue {
  const mean = meanWithStderr(itemValues);
  if (METRICS[metric].aggregation === 'mean') return mean;
  const value = Math.exp(-mean.value);
  return { value, stderr: mean.stderr === null ? null : value * mean.stderr };
}

/** Index of the largest value; the first one wins a tie (numpy's argmax). */
export function argmax(values: readonly number[]): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i] > values[best]) best = i;
  return best;
}

export interface ChoicePredictions {
  /** argmax of the summed log-probability */
  pred: number;
  /** argmax of log-probability per character of the choice text */
  predNorm: number;
  /** argmax of log-probability per UTF-8 byte of the choice text */
  predBytes: number;
}

/** Characters as Python's len counts them (code points), so a character outside the BMP counts once. */
export function charLength(text: string): number {
  return Array.from(text).length;
}

export function utf8Length(text: string): number {
  return Buffer.byteLength(text, 'utf8');
}

/**
 * Predictions for one multiple-choice item from its choices' summed log-probabilities. The lengths are those of
 * the choice texts alone, as lm-evaluation-harness divides: the delimiter (and any whitespace moved over from the
 * context) is scored with each choice but is the same for all, so counting it would favour short choices less.
 */
export function predictChoice(logprobs: readonly number[], choices: readonly string[]): ChoicePredictions {
  if (logprobs.length !== choices.length) throw new Error(`predictChoice: ${logprobs.length} log-probabilities for ${choices.length} choices`);
  return {
    pred: argmax(logprobs),
    predNorm: argmax(logprobs.map((lp, i) => lp / charLength(choices[i]))),
    predBytes: argmax(logprobs.map((lp, i) => lp / utf8Length(choices[i]))),
  };
}

/** Expected accuracy of a uniform random guess: the mean over items of 1 / number of choices. */
export function chanceLevel(choiceCounts: readonly number[]): number {
  if (choiceCounts.length === 0) return NaN;
  return choiceCounts.reduce((sum, n) => sum + 1 / n, 0) / choiceCounts.length;
}
