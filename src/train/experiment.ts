/**
 * Experiments: a config whose `experiment` lists variants, seeds or learning rates trains one arm per combination,
 * each into `<out>/<experiment>/<arm>/`, sharing everything else (the same data.seed gives every arm the same
 * batches). Arms run in this process one after another, or in `jobs` child processes.
 */
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import type { Config } from '../config/types';
import { UserError } from '../errors';
import { PROGRESS_JSONL_ENV, progressReplayer, silentProgress, type ProgressSink } from './progress';
import { cliEntry } from '../paths';
import { writeJson } from '../runfolder/atomic';
import { removeForForce } from '../runfolder/folder';
import type { RunSummary } from '../runfolder/types';
import { SIGNAL_EXIT_CODES } from '../exit-codes';
import { prepareRun, trainRun, type TrainResult } from './run';

export interface Arm {
  name: string;
  config: Config;
}

export function isExperiment(cfg: Config): boolean {
  const e = cfg.experiment;
  return e.variants.length + e.seeds.length + e.lrs.length > 0;
}

/** The cross product of the experiment lists, named by what varies (`qk-norm`, `qk-norm-lr0.003-s1`, ...). */
export function expandArms(cfg: Config): Arm[] {
  const e = cfg.experiment;
  const variants = e.variants.length ? e.variants : [cfg.model.variant];
  const seeds = e.seeds.length ? e.seeds : [cfg.seed];
  const lrs = e.lrs.length ? e.lrs : [cfg.train.lr];
  const arms: Arm[] = [];
  for (const variant of variants) {
    for (const lr of lrs) {
      for (const seed of seeds) {
        const parts: string[] = [variant];
        if (lrs.length > 1) parts.push(`lr${lr}`);
        if (seeds.length > 1) parts.push(`s${seed}`);
        const config: Config = JSON.parse(JSON.stringify(cfg));
        config.model.variant = variant;
        config.seed = seed;
        config.train.lr = lr;
        config.experiment = { variants: [], seeds: [], lrs: [] };
        arms.push({ name: parts.join('-'), config });
      }
    }
  }
  if (new Set(arms.map((a) => a.name)).size !== arms.length) throw new UserError('experiment: the lists repeat a value, which would give two arms one folder');
  return arms;
}

export interface ExperimentOptions {
  config: Config;
  /** The experiment's folder: arms go into `<dir>/<arm>/`. */
  dir: string;
  resume: boolean;
  force: boolean;
  jobs: number;
  progress?: ProgressSink;
  /** How to start one arm in a child process (the CLI passes its own argv); required when jobs > 1. */
  childArgs?: (arm: Arm) => string[];
}

export interface ExperimentResult {
  dir: string;
  arms: { name: string; dir: string; status: RunSummary['status'] | 'failed'; exitCode: number; summary?: RunSummary; error?: string }[];
  /** The signal that stopped the experiment early, if one did. */
  stopSignal: string | null;
}

export async function runExperiment(opts: ExperimentOptions): Promise<ExperimentResult> {
  const arms = expandArms(opts.config);
  // Bad input fails here, before any folder exists: data, vocabulary, budget (the arms share all of it but variant,
  // seed and lr, so the first arm stands for all).
  prepareRun(arms[0].config).data.close();
  if (fs.existsSync(opts.dir) && !opts.resume && !opts.force && fs.readdirSync(opts.dir).length > 0) {
    throw new UserError(`${opts.dir}: experiment folder exists; pass --resume to continue it or --force to start over`);
  }
  if (opts.force && !opts.resume) removeForForce(opts.dir);
  try {
    fs.mkdirSync(opts.dir, { recursive: true });
  } catch (e) {
    throw new UserError(`${opts.dir}: experiment folder is not writable (${(e as NodeJS.ErrnoException).code})`);
  }
  writeJson(path.join(opts.dir, 'experiment.json'), {
    name: opts.config.name,
    arms: arms.map((a) => ({ name: a.name, dir: a.name, variant: a.config.model.variant, seed: a.config.seed, lr: a.config.train.lr })),
  });
  const results: ExperimentResult['arms'] = new Array(arms.length);
  // Ctrl-C or SIGTERM: running arms stop after their current step with a checkpoint, no new arm starts. Arms in
  // child processes get the signal from here, once (they run in their own process group, so a terminal's Ctrl-C
  // does not also reach them directly and count as a second, immediate stop).
  const children = new Set<ChildProcess>();
  let stopSignal = '';
  const onSignal = (sig: NodeJS.Signals) => () => {
    stopSignal = sig;
    for (const child of children) child.kill(sig);
  };
  const handlers = (['SIGINT', 'SIGTERM'] as const).map((sig) => [sig, onSignal(sig)] as const);
  for (const [sig, h] of handlers) process.on(sig, h);
  const runOne = async (i: number): Promise<void> => {
    const arm = arms[i];
    const dir = path.join(opts.dir, arm.name);
    try {
      if (opts.jobs > 1) {
        const code = await runCli(opts.childArgs!(arm), opts.progress ?? silentProgress, arm.name, children);
        const summaryFile = path.join(dir, 'summary.json');
        const summary = fs.existsSync(summaryFile) ? (JSON.parse(fs.readFileSync(summaryFile, 'utf8')) as RunSummary) : undefined;
        results[i] = { name: arm.name, dir, status: summary && code !== 1 && code !== 2 ? summary.status : 'failed', exitCode: code, summary };
      } else {
        const r: TrainResult = await trainRun({
          config: arm.config,
          runDir: dir,
          resume: opts.resume && fs.existsSync(dir),
          force: opts.force,
          arm: arm.name,
          experiment: opts.config.name,
          progress: opts.progress,
        });
        results[i] = { name: arm.name, dir, status: r.summary.status, exitCode: r.exitCode, summary: r.summary };
      }
    } catch (e) {
      // One failing arm does not stop the others; the experiment reports it.
      results[i] = { name: arm.name, dir, status: 'failed', exitCode: (e as UserError).exitCode ?? 1, error: (e as Error).message.split('\n')[0] };
    }
  };
  const jobs = Math.max(1, Math.min(opts.jobs, arms.length));
  let next = 0;
  try {
    await Promise.all(
      Array.from({ length: jobs }, async () => {
        while (next < arms.length && !stopSignal) await runOne(next++);
      }),
    );
  } finally {
    for (const [sig, h] of handlers) process.off(sig, h);
  }
  for (let i = 0; i < arms.length; i++) {
    results[i] ??= { name: arms[i].name, dir: path.join(opts.dir, arms[i].name), status: 'interrupted', exitCode: SIGNAL_EXIT_CODES[stopSignal], error: 'not started' };
  }
  return { dir: opts.dir, arms: results, stopSignal: stopSignal || null };
}

/**
 * Run an mlactl command in a child process; resolves to its exit code. Its progress shows in `sink` (a lane of
 * its own when the display has lanes), its other stderr lines as notes naming `label`.
 */
export function runCli(args: string[], sink: ProgressSink = silentProgress, label = args[0], children?: Set<ChildProcess>): Promise<number> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [cliEntry(), ...args], {
      stdio: ['ignore', 'ignore', 'pipe'],
      // Its own process group: a terminal's Ctrl-C reaches the parent alone, which passes it on once.
      detached: true,
      env: { ...process.env, [PROGRESS_JSONL_ENV]: '1' },
    });
    children?.add(child);
    child.on('exit', () => children?.delete(child));
    const lane = sink.lane?.(label) ?? sink;
    const replay = progressReplayer({ ...lane, note: (line) => lane.note(line.startsWith(label) ? line : `${label}: ${line}`) });
    let pending = '';
    child.stderr.on('data', (d: Buffer) => {
      const lines = (pending + d.toString()).split('\n');
      pending = lines.pop()!;
      for (const line of lines) replay(line);
    });
    child.on('close', (code) => {
      if (pending) replay(pending);
      resolve(code ?? 1);
    });
    child.on('error', () => resolve(1));
  });
}
