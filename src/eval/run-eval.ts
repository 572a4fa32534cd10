/**
 * Evaluate a run folder's checkpoints on declarative tasks: the run's own config names the default tasks, the
 * item limit and the document split the built-in Brown tasks draw their held-out documents from.
 */
import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';
import type { Config } from '../config/types';
import { printable, UserError } from '../errors';
import { experimentArmsHint } from '../runfolder/folder';
import { listCheckpoints } from '../runfolder/training-checkpoint';
import { evaluateTasks, type EvalProgress } from './runner';
import { writeFileAtomic } from '../runfolder/atomic';
import { appendByStep, evalDir, writeEvalResults, type EvalSummary } from './results';
import { loadTask, type EvalTask } from './tasks';
import type { OpenScorer } from './types';

export interface EvaluateRunOptions {
  runDir: string;
  /** Task specs (`name` or `name=FILE[,LABELS]`); default: the run config's eval.tasks. */
  tasks?: string[];
  /** A checkpoint step; default the newest. */
  step?: number;
  allCheckpoints?: boolean;
  /** Exactly these checkpoint steps (for example [0, final]). */
  steps?: number[];
  limit?: number;
  batchSize?: number;
  /** The engine's scorer for one checkpoint: evaluation itself knows no framework. */
  openScorer: OpenScorer;
  onProgress?: (p: EvalProgress & { step: number }) => void;
}

export interface EvaluateRunResult {
  runDir: string;
  /** eval/ for whole tasks, eval/limit-N/ for a limited look. */
  resultsDir: string;
  evaluations: EvalSummary[];
  /** Items over the whole evaluation's wall clock, opening each checkpoint's scorer (a torch engine's start and model load) included. */
  itemsPerSecond: number;
  /**
   * Items over the time spent scoring them alone, from when the scorer was ready (or, if it was ready first, from
   * when tokenizing began); a compiling engine compiles on its first requests, inside this time.
   */
  scoringItemsPerSecond: number;
  /** Seconds from starting each checkpoint's scorer to its being ready (tokenizing overlaps them), summed over checkpoints. */
  openSeconds: number;
}

export function readRunConfig(runDir: string): Config {
  const file = path.join(runDir, 'config.resolved.yaml');
  if (!fs.existsSync(file)) throw new UserError(printable(experimentArmsHint(runDir) ?? `${runDir}: not a run folder (no config.resolved.yaml)`));
  return YAML.parse(fs.readFileSync(file, 'utf8')) as Config;
}

function tokensAt(ckptDir: string): number {
  const state = path.join(ckptDir, 'state.json');
  return fs.existsSync(state) ? (JSON.parse(fs.readFileSync(state, 'utf8')) as { tokens: number }).tokens : 0;
}

export async function evaluateRun(opts: EvaluateRunOptions): Promise<EvaluateRunResult> {
  const cfg = readRunConfig(opts.runDir);
  const available = listCheckpoints(opts.runDir);
  const runDir = printable(opts.runDir);
  if (!available.length) throw new UserError(`${runDir}: no checkpoint to evaluate (ckpt/step-N)`);
  let chosen = available;
  if (opts.steps) {
    chosen = opts.steps.map((st) => {
      const hit = available.find((c) => c.step === st);
      if (!hit) throw new UserError(`step ${st}: no such checkpoint in ${runDir} (steps: ${available.map((c) => c.step).join(', ')})`);
      return hit;
    });
  } else if (!opts.allCheckpoints) {
    const want = opts.step ?? available[available.length - 1].step;
    const hit = available.find((c) => c.step === want);
    if (!hit) throw new UserError(`--step ${want}: no such checkpoint in ${runDir} (steps: ${available.map((c) => c.step).join(', ')})`);
    chosen = [hit];
  }
  const limit = opts.limit ?? cfg.eval.limit;
  const variant = limit === cfg.eval.limit ? '' : `limit-${limit || 'all'}`;
  const specs = opts.tasks?.length ? opts.tasks : cfg.eval.tasks;
  if (!specs.length) throw new UserError('eval.tasks: no tasks to evaluate (pass --task NAME or set eval.tasks)');
  // Every task is parsed before any checkpoint is scored, so a malformed file writes nothing.
  const tasks: EvalTask[] = specs.map((spec) =>
    loadTask(spec, { limit, brownSplit: { seed: cfg.data.seed, valFraction: cfg.data.val_fraction, testFraction: cfg.data.test_fraction } }),
  );
  const evaluations: EvalSummary[] = [];
  let items = 0;
  let openMs = 0;
  let scoringMs = 0;
  const t0 = Date.now();
  for (const ckpt of chosen) {
    // Training feeds windows of data.seq_len positions, and so does evaluation, as lm-evaluation-harness feeds
    // max_length: a scored sequence holds seq_len + 1 tokens, its last one only a target.
    const opened = Date.now();
    const scorer = await opts.openScorer(ckpt.dir, { batchSize: opts.batchSize ?? cfg.eval.batch_size, window: cfg.data.seq_len, windowKey: 'data.seq_len' });
    try {
      // A scorer that loads in another process is still loading here: the first task's items are tokenized
      // meanwhile, and scoring is timed from when both were done.
      const scoring = Date.now();
      const results = await evaluateTasks(scorer, tasks, { limit, batchSize: scorer.batchSize, onProgress: (p) => opts.onProgress?.({ ...p, step: ckpt.step }) });
      const readyAt = await scorer.ready();
      openMs += Math.max(0, readyAt - opened);
      scoringMs += Date.now() - Math.max(readyAt, scoring);
      items += results.tasks.reduce((n, t) => n + t.n, 0);
      const summary = writeEvalResults(opts.runDir, results, { checkpointStep: ckpt.step, tokens: tokensAt(ckpt.dir) }, variant);
      appendByStep(opts.runDir, summary, variant);
      evaluations.push(summary);
    } finally {
      scorer.dispose();
    }
  }
  recordHistory(evalDir(opts.runDir, variant));
  return {
    runDir: opts.runDir,
    resultsDir: evalDir(opts.runDir, variant),
    evaluations,
    itemsPerSecond: items / (Math.max(1, Date.now() - t0) / 1000),
    scoringItemsPerSecond: items / (Math.max(1, scoringMs) / 1000),
    openSeconds: openMs / 1000,
  };
}

/**
 * results.json describes the newest evaluation per task; every evaluated checkpoint is also kept there under
 * `by_step` (from eval/by-step.csv), so one file holds, say, step 0 against the final step.
 */
function recordHistory(dir: string): void {
  const results = JSON.parse(fs.readFileSync(path.join(dir, 'results.json'), 'utf8')) as Record<string, unknown> & { tasks: Record<string, { checkpoint_step: number; tokens: number }> };
  const lines = fs.readFileSync(path.join(dir, 'by-step.csv'), 'utf8').trim().split('\n').slice(1);
  const byStep: Record<string, { step: number; tokens: number; tasks: Record<string, Record<string, { value: number | null; stderr: number | null }>> }> = {};
  for (const line of lines) {
    const [step, tokens, task, metric, value, stderr] = line.split(',');
    const entry = (byStep[step] ??= { step: Number(step), tokens: Number(tokens), tasks: {} });
    (entry.tasks[task] ??= {})[metric] = { value: value === '' ? null : Number(value), stderr: stderr === '' ? null : Number(stderr) };
  }
  const newest = Object.values(results.tasks).reduce((a, t) => (t.checkpoint_step > a.step ? { step: t.checkpoint_step, tokens: t.tokens } : a), { step: -1, tokens: 0 });
  const out = { checkpoint_step: newest.step, tokens: newest.tokens, ...results, by_step: Object.values(byStep).sort((a, b) => a.step - b.step) };
  writeFileAtomic(path.join(dir, 'results.json'), JSON.stringify(out, null, 2) + '\n');
}
