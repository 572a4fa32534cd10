/**
 * Where each run of a sweep stands, from what it left in the sweep folder (summary.json, the last metrics line, the
 * run lock, its exit file) and, for a Slurm sweep, what the scheduler says about its newest array task.
 */
import * as fs from 'fs';
import * as path from 'path';
import { setConfigValue } from '../config/load';
import type { Config } from '../config/types';
import { SIGNAL_EXIT_CODES } from '../exit-codes';
import { planSteps } from '../engine/types';
import type { RunSummary } from '../runfolder/types';
import { readExit, readSweep, sweepLockHolder } from './folder';
import { isActive, latestTaskOf, queueView, readJobs } from './slurm';
import type { AxisValue, RunExit, RunState, SweepFile } from './types';

export interface RunStatusRow {
  id: string;
  /** The run folder, relative to the sweep folder. */
  dir: string;
  overrides: Record<string, AxisValue>;
  state: RunState;
  /** Optimizer steps done: the last metrics line, else the summary. */
  step: number;
  total_steps: number;
  /** summary.json's status, null before the first checkpoint. */
  summary_status: RunSummary['status'] | null;
  final_train_loss: number | null;
  final_val_loss: number | null;
  /** The last attempt's exit code (exits/<id>.json), null while none has ended. */
  exit_code: number | null;
  /** Slurm: the newest array task and its state (null when not submitted or no longer known). */
  slurm: { task: string; state: string | null } | null;
}

export interface SweepStatus {
  dir: string;
  name: string;
  executor: SweepFile['executor'];
  counts: Partial<Record<RunState, number>>;
  runs: RunStatusRow[];
  /** Slurm sweeps: the array jobs submitted, and why the queue could not be read (null when it could). */
  slurm: { jobs: string[]; queue_error: string | null } | null;
  /** Local sweeps: the pid of the executor process working on it, if one is. */
  local_pid: number | null;
}

/** The inputs of one run's state, gathered from files and the scheduler. */
export interface StateInputs {
  summary: Pick<RunSummary, 'status' | 'step' | 'total_steps'> | null;
  /** The run folder exists and holds something. */
  started: boolean;
  exit: Pick<RunExit, 'exit_code'> | null;
  /** A live process holds the run lock (local sweeps; a Slurm task's pid is on another machine). */
  lockAlive: boolean;
  /** A local executor is working on the sweep: runs not started yet are waiting their turn. */
  executorAlive: boolean;
  /** Slurm's state of the run's newest task, null when not known. */
  queue: string | null;
}

const CANCELLED = new Set(['CANCELLED', 'TIMEOUT', 'PREEMPTED', 'DEADLINE', 'NODE_FAIL', 'BOOT_FAIL', 'REVOKED']);

export function runState(x: StateInputs): RunState {
  if (x.queue && isActive(x.queue)) return x.queue === 'RUNNING' || x.queue === 'COMPLETING' || x.queue === 'CONFIGURING' ? 'running' : 'queued';
  if (x.lockAlive) return 'running';
  const s = x.summary;
  if (s?.status === 'completed' && s.total_steps !== null && s.step >= s.total_steps) return 'completed';
  if (s?.status === 'diverged') return 'diverged';
  if (x.queue && CANCELLED.has(x.queue)) return 'cancelled';
  if (s?.status === 'interrupted') return 'interrupted';
  if (x.exit && Object.values(SIGNAL_EXIT_CODES).includes(x.exit.exit_code)) return 'interrupted';
  if (!x.started && !x.exit) return x.executorAlive ? 'queued' : 'missing';
  if (x.executorAlive && !x.exit && !x.lockAlive) return 'queued';
  return 'failed';
}

function readSummary(runDir: string): RunSummary | null {
  try {
    return JSON.parse(fs.readFileSync(path.join(runDir, 'summary.json'), 'utf8')) as RunSummary;
  } catch {
    return null;
  }
}

/** The step of the last complete line of metrics.jsonl, read from the file's end. */
export function lastMetricsStep(runDir: string): number | null {
  const file = path.join(runDir, 'metrics.jsonl');
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    return null;
  }
  try {
    const size = fs.fstatSync(fd).size;
    const len = Math.min(size, 1 << 16);
    const buf = Buffer.alloc(len);
    fs.readSync(fd, buf, 0, len, size - len);
    const lines = buf.toString('utf8').split('\n');
    lines.pop(); // the part after the last newline: empty, or a line being written
    for (let i = lines.length - 1; i >= 0; i--) {
      try {
        const step = (JSON.parse(lines[i]) as { step?: unknown }).step;
        if (typeof step === 'number') return step;
      } catch {
        // the first line of the window may be cut: try the one before
      }
    }
    return null;
  } finally {
    fs.closeSync(fd);
  }
}

function lockAlive(runDir: string): boolean {
  try {
    const pid = Number(fs.readFileSync(path.join(runDir, 'run.lock'), 'utf8').trim());
    if (!pid) return false;
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A run's config: the sweep's base with the run's overrides, enough to count its steps. */
export function runConfig(sweep: SweepFile, overrides: Record<string, AxisValue>): Config {
  const cfg = JSON.parse(JSON.stringify(sweep.base_config)) as Record<string, unknown>;
  for (const [key, value] of Object.entries(overrides)) setConfigValue(cfg, key, value);
  return cfg as unknown as Config;
}

export function sweepStatus(dir: string): SweepStatus {
  const sweep = readSweep(dir);
  let tasks: (string | null)[] = sweep.runs.map(() => null);
  let queue: Map<string, string> = new Map();
  let slurm: SweepStatus['slurm'] = null;
  if (sweep.executor === 'slurm') {
    const jobs = readJobs(dir);
    tasks = latestTaskOf(jobs, sweep.runs.length);
    const ids = [...new Set(jobs.submissions.map((s) => s.job_id))];
    const view = queueView(ids);
    queue = view.tasks;
    slurm = { jobs: ids, queue_error: view.error };
  }
  const localPid = sweep.executor === 'local' ? sweepLockHolder(dir) : null;
  const runs = sweep.runs.map((run, i): RunStatusRow => {
    const runDir = path.join(dir, run.dir);
    const summary = readSummary(runDir);
    const exit = readExit(dir, run.id);
    const started = fs.existsSync(runDir) && fs.readdirSync(runDir).length > 0;
    const task = tasks[i];
    const q = task ? queue.get(task) ?? null : null;
    const state = runState({
      summary,
      started,
      exit,
      lockAlive: sweep.executor === 'local' && started && lockAlive(runDir),
      executorAlive: localPid !== null,
      queue: q,
    });
    return {
      id: run.id,
      dir: run.dir,
      overrides: run.overrides,
      state,
      step: lastMetricsStep(runDir) ?? summary?.step ?? 0,
      total_steps: summary?.total_steps ?? planSteps(runConfig(sweep, run.overrides)).totalSteps,
      summary_status: summary?.status ?? null,
      final_train_loss: summary?.final_train_loss ?? null,
      final_val_loss: summary?.final_val_loss ?? null,
      exit_code: exit?.exit_code ?? null,
      slurm: task ? { task, state: q } : null,
    };
  });
  const counts: SweepStatus['counts'] = {};
  for (const r of runs) counts[r.state] = (counts[r.state] ?? 0) + 1;
  return { dir, name: sweep.name, executor: sweep.executor, counts, runs, slurm, local_pid: localPid };
}

export function countsLine(counts: SweepStatus['counts']): string {
  const order: RunState[] = ['completed', 'diverged', 'running', 'queued', 'interrupted', 'cancelled', 'failed', 'missing'];
  return order.filter((s) => counts[s]).map((s) => `${counts[s]} ${s}`).join(', ') || 'no runs';
}
