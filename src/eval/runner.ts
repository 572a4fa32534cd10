import { DEFAULT_EVAL_BATCH_SIZE, loglikelihood } from './loglikelihood';
import { aggregateMetric, argmax, chanceLevel, METRICS, predictChoice, type Aggregation, type MetricValue } from './metrics';
import { checkLimit, type EvalTask } from './tasks';
import type { LoglikelihoodRequest, LoglikelihoodResult, MetricName, ScoringModel, TaskItem } from './types';

export interface EvalProgress {
  task: string;
  /** Sequences scored so far in this task. */
  done: number;
  total: number;
}

export interface EvaluateOptions {
  /** Evaluate the first `limit` items of each task (0 or undefined: all). */
  limit?: number;
  batchSize?: number;
  onProgress?: (progress: EvalProgress) => void;
}

export interface MetricResult extends MetricValue {
  higherIsBetter: boolean;
  aggregation: Aggregation;
}

/** One scored item as written to eval/<task>.jsonl. */
export type ItemRecord =
  | { index: number; context: string; choices: string[]; gold: number; logprobs: number[]; pred: number; pred_norm: number; pred_bytes: number }
  | { index: number; contexts: string[]; continuation: string; gold: number; logprobs: number[]; pred: number }
  | { index: number; context: string; target: string; logprob: number; greedy: boolean; n_tokens: number };

export interface TaskResult {
  name: string;
  version: number;
  format: string;
  source: string;
  n: number;
  /** Expected accuracy of uniform guessing; null for tasks without choices (LAMBADA). */
  chance: number | null;
  metrics: Partial<Record<MetricName, MetricResult>>;
  items: ItemRecord[];
}

export interface EvalResults {
  tasks: TaskResult[];
}

function requestsFor(item: TaskItem, delimiter: string, id: string): LoglikelihoodRequest[] {
  switch (item.kind) {
    case 'multiple_choice':
      return item.choices.map((choice, j) => ({ context: item.context, continuation: delimiter + choice, id: `${id} choice ${j}` }));
    case 'partial':
      return item.contexts.map((context, j) => ({ context, continuation: delimiter + item.continuation, id: `${id} option ${j}` }));
    case 'target':
      return [{ context: item.context, continuation: delimiter + item.target, id }];
  }
}

interface ScoredItem {
  record: ItemRecord;
  /** Per-item value of each metric the item's kind produces (0/1 correctness, or the target's log-probability). */
  values: Partial<Record<MetricName, number>>;
  nChoices: number | null;
}

function scoreItem(item: TaskItem, index: number, scores: LoglikelihoodResult[]): ScoredItem {
  const logprobs = scores.map((s) => s.logprob);
  switch (item.kind) {
    case 'multiple_choice': {
      const { pred, predNorm, predBytes } = predictChoice(logprobs, item.choices);
      return {
        record: { index, context: item.context, choices: item.choices, gold: item.gold, logprobs, pred, pred_norm: predNorm, pred_bytes: predBytes },
        values: { acc: Number(pred === item.gold), acc_norm: Number(predNorm === item.gold), acc_bytes: Number(predBytes === item.gold) },
        nChoices: item.choices.length,
      };
    }
    case 'partial': {
      // The continuation is the same text under every option, so its raw log-probability compares fairly.
      const pred = argmax(logprobs);
      return {
        record: { index, contexts: item.contexts, continuation: item.continuation, gold: item.gold, logprobs, pred },
        values: { acc: Number(pred === item.gold) },
        nChoices: item.contexts.length,
      };
    }
    case 'target': {
      const [score] = scores;
      return {
        record: { index, context: item.context, target: item.target, logprob: score.logprob, greedy: score.isGreedy, n_tokens: score.nTokens },
        values: { acc: Number(score.isGreedy), perplexity: score.logprob },
        nChoices: null,
      };
    }
  }
}

/** Score one task's items and aggregate its metrics. */
export async function evaluateTask(model: ScoringModel, task: EvalTask, opts: EvaluateOptions = {}): Promise<TaskResult> {
  checkLimit(opts.limit);
  const { definition } = task;
  const items = opts.limit ? task.items.slice(0, opts.limit) : task.items;
  const perItem = items.map((item, index) => requestsFor(item, definition.delimiter, `${definition.name} item ${index}`));
  const scores = await loglikelihood(model, perItem.flat(), {
    batchSize: opts.batchSize ?? DEFAULT_EVAL_BATCH_SIZE,
    onProgress: opts.onProgress && ((done, total) => opts.onProgress!({ task: definition.name, done, total })),
  });
  let offset = 0;
  const scored = items.map((item, index) => {
    const itemScores = scores.slice(offset, offset + perItem[index].length);
    offset += perItem[index].length;
    return scoreItem(item, index, itemScores);
  });
  const metrics: Partial<Record<MetricName, MetricResult>> = {};
  for (const metric of definition.metrics) {
    const values = scored.map((s) => s.values[metric]);
    if (values.some((v) => v === undefined)) throw new Error(`task ${definition.name}: items of kind ${items[0].kind} give no ${metric}`);
    metrics[metric] = {
      ...aggregateMetric(metric, values as number[]),
      higherIsBetter: METRICS[metric].higherIsBetter,
      aggregation: METRICS[metric].aggregation,
    };
  }
  const choiceCounts = scored.map((s) => s.nChoices);
  return {
    name: definition.name,
    version: definition.version,
    format: definition.format,
    source: task.source,
    n: items.length,
    chance: choiceCounts.every((c): c is number => c !== null) ? chanceLevel(choiceCounts) : null,
    metrics,
    items: scored.map((s) => s.record),
  };
}

/** Evaluate tasks one after another; the first error stops the run before anything is written. */
export async function evaluateTasks(model: ScoringModel, tasks: EvalTask[], opts: EvaluateOptions = {}): Promise<EvalResults> {
  const results: TaskResult[] = [];
  for (const task of tasks) results.push(await evaluateTask(model, task, opts));
  return { tasks: results };
}
