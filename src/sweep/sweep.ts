/**
 * Starting and resuming a sweep. Everything that can be wrong with the input is checked before the sweep folder
 * exists or a job is submitted: the sweep file, every run's config, the data and budget, and for Slurm the batch
 * job itself (`sbatch --test-only`). Then the folder is written whole and the executor takes over.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';
import { SIGNAL_EXIT_CODES } from '../exit-codes';
import { prepareRun } from '../train/run';
import { claimSweep, createSweepFolder, prepareSweepDir, readSweep, SWEEP_JSON, sweepFileOf, sweepLockHolder } from './folder';
import { runLocal, type LocalResult } from './local';
import { loadSweep, type SweepPlan } from './plan';
import { arraySpec, batchScript, checkSlurmOptions, SCRIPT, submitArray, validateSbatch } from './slurm';
import { countsLine, sweepStatus, type SweepStatus } from './status';
import { RESUMABLE_STATES, type ExecutorName, type SlurmSubmission } from './types';

export interface StartOptions {
  file: string;
  executor: ExecutorName;
  /** Local: runs at a time (default 1). Slurm: the array throttle (default slurm.throttle, else none). */
  jobs?: number;
  /** The folder that holds sweep folders; the sweep goes into <out>/<name> unless `dir` is given. */
  out: string;
  dir?: string;
  force: boolean;
  /** Slurm: wait until every task has left the queue. */
  wait: boolean;
  note: (line: string) => void;
  pollMs?: number;
}

export interface SweepOutcome {
  dir: string;
  name: string;
  executor: ExecutorName;
  /** The runs this call trained or submitted. */
  runs: string[];
  submission: SlurmSubmission | null;
  stop_signal: string | null;
  /** Where every run stands afterwards (local, or Slurm with --wait); null for a Slurm sweep left to run. */
  status: SweepStatus | null;
  /** 0 when every run completed or diverged (or was submitted), 130 / 143 when stopped by a signal, else 1. */
  exit_code: number;
}

/** Data, vocabulary and budget of every distinct data setup, as `train` would check them (before any folder). */
function checkTrainable(plan: SweepPlan): void {
  const seen = new Set<string>();
  for (const run of plan.runs) {
    const c = run.config;
    const key = JSON.stringify([c.data, c.train.tokens, c.train.batch_size, c.train.grad_accum, c.train.eval_tokens, c.model.max_seq_len]);
    if (seen.has(key)) continue;
    seen.add(key);
    prepareRun(c).data.close();
  }
}

/** A sweep folder being deleted by --force must have no run still going. */
function refuseIfBusy(dir: string): void {
  if (!fs.existsSync(path.join(dir, SWEEP_JSON))) return;
  const sweep = readSweep(dir);
  if (sweep.executor === 'local') {
    const pid = sweepLockHolder(dir);
    if (pid !== null) throw new UserError(`${dir}: --force refuses: process ${pid} is running this sweep`);
    return;
  }
  const status = sweepStatus(dir);
  if (status.slurm?.queue_error) throw new UserError(`${dir}: --force refuses: Slurm's queue cannot be read (${status.slurm.queue_error}), so its tasks may still run`);
  const busy = status.runs.filter((r) => r.state === 'queued' || r.state === 'running');
  if (busy.length) throw new UserError(`${dir}: --force refuses: ${busy.length} of its Slurm tasks are queued or running (scancel ${status.slurm!.jobs.join(' ')} first)`);
}

function exitCodeOf(status: SweepStatus, stopSignal: string | null): number {
  if (stopSignal) return SIGNAL_EXIT_CODES[stopSignal];
  return status.runs.every((r) => r.state === 'completed' || r.state === 'diverged') ? 0 : 1;
}

export async function startSweep(opts: StartOptions): Promise<SweepOutcome> {
  const plan = loadSweep(opts.file);
  const dir = path.resolve(opts.dir ?? path.join(opts.out, plan.spec.name));
  prepareSweepDir(dir, opts.force);
  checkTrainable(plan);
  const slurm = opts.executor === 'slurm' ? { ...plan.spec.slurm, throttle: opts.jobs ?? plan.spec.slurm.throttle } : null;
  const sweep = sweepFileOf(plan, opts.executor, slurm);
  const all = plan.runs.map((_, i) => i);
  const extra: Record<string, string> = {};
  if (slurm) {
    checkSlurmOptions(dir, sweep.cwd, plan.runs.map((r) => r.config), slurm);
    extra[SCRIPT] = batchScript(sweep, dir);
    validateSbatch(extra[SCRIPT], arraySpec(all, slurm.throttle));
  }
  if (opts.force) {
    refuseIfBusy(dir);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  createSweepFolder(dir, sweep, extra);
  opts.note(`sweep ${sweep.name}: ${plan.runs.length} runs in ${dir}`);
  const ids = plan.runs.map((r) => r.id);

  if (slurm) {
    fs.chmodSync(path.join(dir, SCRIPT), 0o755);
    const submission = submitArray(dir, all, slurm.throttle, 'run');
    opts.note(`submitted array job ${submission.job_id} (--array=${submission.array}); batch script ${path.join(dir, SCRIPT)}`);
    if (!opts.wait) return { dir, name: sweep.name, executor: 'slurm', runs: ids, submission, stop_signal: null, status: null, exit_code: 0 };
    const status = await waitForSweep(dir, opts.note, opts.pollMs);
    return { dir, name: sweep.name, executor: 'slurm', runs: ids, submission, stop_signal: null, status, exit_code: exitCodeOf(status, null) };
  }

  const local = await runLocally(dir, all, opts.jobs ?? 1, opts.note);
  const status = sweepStatus(dir);
  return { dir, name: sweep.name, executor: 'local', runs: ids, submission: null, stop_signal: local.stopSignal, status, exit_code: exitCodeOf(status, local.stopSignal) };
}

async function runLocally(dir: string, indices: number[], jobs: number, note: (line: string) => void): Promise<LocalResult> {
  const release = claimSweep(dir);
  try {
    return await runLocal({ dir, sweep: readSweep(dir), indices, jobs, note });
  } finally {
    release();
  }
}

export interface ResumeOptions {
  dir: string;
  jobs?: number;
  wait: boolean;
  note: (line: string) => void;
  pollMs?: number;
}

/**
 * Trains again only the runs that did not finish (interrupted, cancelled, failed, missing), each from its newest
 * checkpoint; completed and diverged runs, and runs still queued or running, are left as they are.
 */
export async function resumeSweep(opts: ResumeOptions): Promise<SweepOutcome> {
  const dir = path.resolve(opts.dir);
  const sweep = readSweep(dir);
  const before = sweepStatus(dir);
  if (before.slurm?.queue_error) throw new UserError(`${dir}: Slurm's queue cannot be read (${before.slurm.queue_error}); resuming now could start a run twice`);
  if (before.local_pid !== null) throw new UserError(`${dir}: process ${before.local_pid} is running this sweep; wait for it or stop it first`);
  const indices = before.runs.flatMap((r, i) => (RESUMABLE_STATES.includes(r.state) ? [i] : []));
  const ids = indices.map((i) => sweep.runs[i].id);
  const outcome = { dir, name: sweep.name, executor: sweep.executor, runs: ids };
  if (indices.length === 0) {
    opts.note(`nothing to resume: ${countsLine(before.counts)}`);
    return { ...outcome, submission: null, stop_signal: null, status: before, exit_code: exitCodeOf(before, null) };
  }
  opts.note(`resuming ${ids.length} of ${sweep.runs.length} runs: ${ids.join(', ')}`);

  if (sweep.executor === 'slurm') {
    const scriptFile = path.join(dir, SCRIPT);
    if (!fs.existsSync(scriptFile)) throw new UserError(`${scriptFile}: the sweep's batch script is missing`);
    const throttle = opts.jobs ?? sweep.slurm?.throttle ?? null;
    validateSbatch(fs.readFileSync(scriptFile, 'utf8'), arraySpec(indices, throttle));
    const submission = submitArray(dir, indices, throttle, 'resume');
    opts.note(`submitted array job ${submission.job_id} (--array=${submission.array})`);
    if (!opts.wait) return { ...outcome, submission, stop_signal: null, status: null, exit_code: 0 };
    const status = await waitForSweep(dir, opts.note, opts.pollMs);
    return { ...outcome, submission, stop_signal: null, status, exit_code: exitCodeOf(status, null) };
  }

  const local = await runLocally(dir, indices, opts.jobs ?? 1, opts.note);
  const status = sweepStatus(dir);
  return { ...outcome, submission: null, stop_signal: local.stopSignal, status, exit_code: exitCodeOf(status, local.stopSignal) };
}

/**
 * Polls until no run is queued or running; says so whenever the counts change. A queue that cannot be read ten
 * times in a row ends the wait with an error (the tasks keep running; `sweep status` shows them).
 */
export async function waitForSweep(dir: string, note: (line: string) => void, pollMs = 5000): Promise<SweepStatus> {
  let last = '';
  let failures = 0;
  for (;;) {
    const status = sweepStatus(dir);
    if (status.slurm?.queue_error) {
      if (++failures >= 10) throw new UserError(`${dir}: Slurm's queue cannot be read (${status.slurm.queue_error}); the tasks may still run: mlactl sweep status ${dir}`, 1);
    } else {
      failures = 0;
      const line = countsLine(status.counts);
      if (line !== last) note(`${new Date().toISOString().slice(11, 19)} ${line}`);
      last = line;
      if (!status.runs.some((r) => r.state === 'queued' || r.state === 'running')) return status;
    }
    await new Promise((r) => setTimeout(r, pollMs));
  }
}
