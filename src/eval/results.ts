// Eval outputs of a run folder, all under <runDir>/eval/:
//   results.json   per task: metrics (value, stderr), n, chance, version, checkpoint step, tokens
//   results.csv    the same, one row per task and metric
//   <task>.jsonl   one scored item per line
//   by-step.csv    one row per (step, task, metric) over the run's checkpoints, for accuracy-versus-tokens tables
// Every file is written to a temporary name and renamed, so a reader never sees half a file.

import * as fs from 'fs';
import * as path from 'path';
import { stringify } from 'csv-stringify/sync';
import { printable, UserError } from '../errors';
import { writeFileAtomic } from '../runfolder/atomic';
import type { Aggregation } from './metrics';
import type { EvalResults } from './runner';

export interface EvalMeta {
  /** Optimizer steps of the checkpoint evaluated. */
  checkpointStep: number;
  /** Training tokens seen by that checkpoint. */
  tokens: number;
}

export interface MetricSummary {
  value: number | null;
  stderr: number | null;
  higher_is_better: boolean;
  aggregation: Aggregation;
}

export interface TaskSummary {
  name: string;
  version: number;
  format: string;
  source: string;
  n: number;
  chance: number | null;
  checkpoint_step: number;
  tokens: number;
  metrics: Record<string, MetricSummary>;
}

/** What one evaluation of one checkpoint produced (the input of `appendByStep`). */
export interface EvalSummary {
  checkpoint_step: number;
  tokens: number;
  tasks: TaskSummary[];
}

/**
 * Where an evaluation's files go: `eval/` for the run's standard evaluation (its config's eval.limit), and
 * `eval/limit-N/` (`limit-all` for every item) for any other item limit, so a quick look at 20 items never replaces
 * the standard results, nor they it. Each folder keeps its own results.json and by-step.csv.
 */
export function evalDir(runDir: string, variant = ''): string {
  return variant ? path.join(runDir, 'eval', variant) : path.join(runDir, 'eval');
}


/** NaN (an empty task) and Infinity have no JSON form; write null. */
function finiteOrNull(value: number | null): number | null {
  return value === null || !Number.isFinite(value) ? null : value;
}

function csvNumber(value: number | null): string {
  return value === null || !Number.isFinite(value) ? '' : String(value);
}

function summarise(results: EvalResults, meta: EvalMeta): EvalSummary {
  return {
    checkpoint_step: meta.checkpointStep,
    tokens: meta.tokens,
    tasks: results.tasks.map((task) => ({
      name: task.name,
      version: task.version,
      format: task.format,
      source: task.source,
      n: task.n,
      chance: finiteOrNull(task.chance),
      checkpoint_step: meta.checkpointStep,
      tokens: meta.tokens,
      metrics: Object.fromEntries(
        Object.entries(task.metrics).map(([metric, m]) => [
          metric,
          { value: finiteOrNull(m.value), stderr: finiteOrNull(m.stderr), higher_is_better: m.higherIsBetter, aggregation: m.aggregation },
        ]),
      ),
    })),
  };
}

function readExistingResults(file: string): Record<string, TaskSummary> {
  if (!fs.existsSync(file)) return {};
  try {
    const parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as { tasks?: Record<string, TaskSummary> };
    if (typeof parsed.tasks !== 'object' || parsed.tasks === null) throw new Error('no "tasks" mapping');
    return parsed.tasks;
  } catch (err) {
    // JSON.parse quotes the file in its message.
    throw new UserError(printable(`${file}: cannot merge new results into it (${(err as Error).message}); move it away and rerun`));
  }
}

export const RESULTS_CSV_HEADER = ['task', 'metric', 'value', 'stderr', 'n', 'chance', 'version', 'step', 'tokens'];
export const BY_STEP_CSV_HEADER = ['step', 'tokens', 'task', 'metric', 'value', 'stderr'];

/**
 * Write the results of evaluating one checkpoint into <runDir>/eval/. Tasks evaluated earlier and not now keep
 * their entries in results.json/csv (each entry names its checkpoint step). Returns this evaluation's summary.
 */
export function writeEvalResults(runDir: string, results: EvalResults, meta: EvalMeta, variant = ''): EvalSummary {
  const dir = evalDir(runDir, variant);
  fs.mkdirSync(dir, { recursive: true });
  const resultsFile = path.join(dir, 'results.json');
  const merged = readExistingResults(resultsFile);
  const summary = summarise(results, meta);
  for (const task of results.tasks) {
    writeFileAtomic(path.join(dir, `${task.name}.jsonl`), task.items.map((item) => JSON.stringify(item) + '\n').join(''));
  }
  for (const task of summary.tasks) merged[task.name] = task;
  const ordered = Object.fromEntries(Object.keys(merged).sort().map((name) => [name, merged[name]]));
  writeFileAtomic(resultsFile, JSON.stringify({ tasks: ordered }, null, 2) + '\n');
  const rows = Object.values(ordered).flatMap((task) =>
    Object.entries(task.metrics).map(([metric, m]) => [
      task.name, metric, csvNumber(m.value), csvNumber(m.stderr), String(task.n), csvNumber(task.chance), String(task.version), String(task.checkpoint_step), String(task.tokens),
    ]),
  );
  writeFileAtomic(path.join(dir, 'results.csv'), stringify([RESULTS_CSV_HEADER, ...rows]));
  return summary;
}

/**
 * Add one evaluation's metrics to <runDir>/eval/by-step.csv. Rows of the same (step, task, metric) are replaced,
 * so re-evaluating a checkpoint does not duplicate it; rows stay ordered by step.
 */
export function appendByStep(runDir: string, summary: EvalSummary, variant = ''): void {
  const dir = evalDir(runDir, variant);
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, 'by-step.csv');
  let rows: string[][] = [];
  if (fs.existsSync(file)) {
    const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
    if (lines[0] !== BY_STEP_CSV_HEADER.join(',')) throw new UserError(`${printable(file)}:1: expected the header ${BY_STEP_CSV_HEADER.join(',')}`);
    // Task names are [a-z0-9_-] and the rest are numbers, so no field is quoted.
    rows = lines.slice(1).map((line) => line.split(','));
  }
  const fresh = summary.tasks.flatMap((task) =>
    Object.entries(task.metrics).map(([metric, m]) => [String(summary.checkpoint_step), String(summary.tokens), task.name, metric, csvNumber(m.value), csvNumber(m.stderr)]),
  );
  const replaced = new Set(fresh.map((r) => `${r[0]}|${r[2]}|${r[3]}`));
  rows = rows.filter((r) => !replaced.has(`${r[0]}|${r[2]}|${r[3]}`)).concat(fresh);
  // Array.prototype.sort is stable, so rows of one step keep their order.
  rows.sort((a, b) => Number(a[0]) - Number(b[0]));
  writeFileAtomic(file, stringify([BY_STEP_CSV_HEADER, ...rows]));
}
