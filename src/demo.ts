/**
 * The one-command demo: train the three variants of configs/experiments/demo.yaml on the embedded Brown corpus
 * (arms in parallel processes), evaluate each arm's final checkpoint against its own step-0 checkpoint on the
 * built-in tasks, and write the comparison report.
 */
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadConfig } from './config/load';
import { evaluateRun } from './eval/run-eval';
import { tfjsScorers } from './inference/scoring';
import { compareRuns, type CompareResult } from './report/compare';
import { latestCheckpoint } from './runfolder/training-checkpoint';
import { runCli, runExperiment, type ExperimentResult } from './train/experiment';
import { PACKAGE_ROOT } from './paths';
import type { ProgressSink } from './train/progress';

export const DEMO_CONFIG = path.join(PACKAGE_ROOT, 'configs', 'experiments', 'demo.yaml');

export interface DemoOptions {
  out: string;
  sets: string[];
  jobs?: number;
  force: boolean;
  progress: ProgressSink;
}

export interface DemoResult {
  experimentDir: string;
  report: string;
  headline: string;
  summary: string[];
  /** Per arm and task: accuracy at step 0 and at the final checkpoint, and their difference in standard errors. */
  learning: string[];
  arms: ExperimentResult['arms'];
  seconds: { train: number; eval: number; compare: number; total: number };
}

interface ByStepEntry {
  step: number;
  tasks: Record<string, Record<string, { value: number; stderr: number }>>;
}

/**
 * "arm task: acc 0.255 ± 0.031 at step 0 -> 0.340 ± 0.034 at step 60 (+2.0 se)": whether evaluation sees the
 * training, with the difference over the standard error of the difference, taken as if the two evaluations were
 * independent samples (they score the same items, so the paired error would be smaller: this is conservative).
 */
export function learningLines(arm: string, runDir: string): string[] {
  const file = path.join(runDir, 'eval', 'results.json');
  if (!fs.existsSync(file)) return [];
  const byStep = ((JSON.parse(fs.readFileSync(file, 'utf8')) as { by_step?: ByStepEntry[] }).by_step ?? []).slice().sort((a, b) => a.step - b.step);
  if (byStep.length < 2 || byStep[0].step !== 0) return [];
  const first = byStep[0];
  const last = byStep[byStep.length - 1];
  return Object.keys(last.tasks)
    .filter((task) => first.tasks[task]?.acc && last.tasks[task].acc)
    .map((task) => {
      const a = first.tasks[task].acc;
      const b = last.tasks[task].acc;
      const se = Math.hypot(a.stderr, b.stderr);
      const z = se > 0 ? (b.value - a.value) / se : 0;
      return `${arm} ${task}: acc ${a.value.toFixed(3)} ± ${a.stderr.toFixed(3)} at step 0 -> ${b.value.toFixed(3)} ± ${b.stderr.toFixed(3)} at step ${last.step} (${z >= 0 ? '+' : ''}${z.toFixed(1)} se)`;
    });
}

export async function runDemo(opts: DemoOptions): Promise<DemoResult> {
  const t0 = Date.now();
  const cfg = loadConfig(DEMO_CONFIG, opts.sets);
  const dir = path.join(opts.out, cfg.name);
  // All arms at once even on two cores: three processes on two cores finish in 1.5 arm-times, two rounds take 2.
  const jobs = opts.jobs ?? (os.cpus().length > 1 ? 3 : 1);
  const trained = await runExperiment({
    config: cfg,
    dir,
    resume: false,
    force: opts.force,
    jobs,
    progress: opts.progress,
    childArgs: (arm) => ['train', '--config', DEMO_CONFIG, ...opts.sets.flatMap((s) => ['--set', s]), '--arm', arm.name, '--out', opts.out, ...(opts.force ? ['--force'] : [])],
  });
  const t1 = Date.now();
  // Each arm's final checkpoint against its own untrained one, arms in parallel processes like training.
  await Promise.all(
    trained.arms.map(async (arm) => {
      const last = latestCheckpoint(arm.dir);
      if (!last) return; // failed before its first step: the report lists it with its status
      const steps = last.step > 0 ? [0, last.step] : [0];
      const code = jobs > 1
        ? await runCli(['eval', '--run', arm.dir, ...steps.flatMap((s) => ['--step', String(s)]), '--json'], opts.progress, `${arm.name} eval`)
        : (await evaluateRun({ runDir: arm.dir, steps, openScorer: tfjsScorers(cfg.backend) }), 0);
      if (code !== 0) opts.progress.note(`evaluation of ${arm.name} failed (exit ${code})`);
    }),
  );
  const t2 = Date.now();
  const cmp: CompareResult = await compareRuns({ inputs: [dir], baseline: 'baseline' });
  const t3 = Date.now();
  return {
    experimentDir: dir,
    report: cmp.report,
    headline: cmp.headline,
    summary: cmp.summary,
    learning: trained.arms.flatMap((arm) => learningLines(arm.name, arm.dir)),
    arms: trained.arms,
    seconds: { train: (t1 - t0) / 1000, eval: (t2 - t1) / 1000, compare: (t3 - t2) / 1000, total: (t3 - t0) / 1000 },
  };
}
