import type { LoglikelihoodResult, MetricName } from './types';

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
    description: 'as acc, with each choice\'s log-probability divided by the character length of its continuation as scored',
  },
  acc_bytes: {
    name: 'acc_bytes',
    higherIsBetter: true,
    aggregation: 'mean',
    description: 'as acc, with each choice\'s log-probability divided by the UTF-8 byte length of its continuation as scored',
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
  /** argmax of log-probability per character of the continuation as scored */
  predNorm: number;
  /** argmax of log-probability per UTF-8 byte of the continuation as scored */
  predBytes: number;
}

/** Predictions for one multiple-choice item from its choices' scores. */
export function predictChoice(choiceScores: readonly LoglikelihoodResult[]): ChoicePredictions {
  return {
    pred: argmax(choiceScores.map((s) => s.logprob)),
    predNorm: argmax(choiceScores.map((s) => s.logprob / s.nChars)),
    predBytes: argmax(choiceScores.map((s) => s.logprob / s.nBytes)),
  };
}

/** Expected accuracy of a uniform random guess: the mean over items of 1 / number of choices. */
export function chanceLevel(choiceCounts: readonly number[]): number {
  if (choiceCounts.length === 0) return NaN;
  return choiceCounts.reduce((sum, n) => sum + 1 / n, 0) / choiceCounts.length;
}
