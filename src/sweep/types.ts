/**
 * The sweep folder's files as types, shared by the executors that write them and by `sweep status`, `sweep resume`
 * and `compare`, which read them. docs/sweeps.md describes the same layout:
 *
 *   SWEEP_DIR/sweep.json          what the sweep is: base config, axes, one entry per run (format mlactl-sweep/1)
 *   SWEEP_DIR/base.resolved.yaml  the base config every run trains from (resolved once, so edits to the source
 *                                 config after the sweep started cannot split it in two)
 *   SWEEP_DIR/runs/<id>/          ordinary run folders, exactly what `mlactl train --run-dir` writes
 *   SWEEP_DIR/logs/<id>.log       each run's output, appended once per attempt
 *   SWEEP_DIR/exits/<id>.json     how each run's last attempt ended (exit code)
 *   SWEEP_DIR/sweep.lock          the pid of a local executor working on the sweep (absent when none)
 *   SWEEP_DIR/slurm/              sweep.sbatch (the batch script), jobs.json (submissions), logs/ (Slurm's output)
 */
import type { Config } from '../config/types';

export const SWEEP_FORMAT = 'mlactl-sweep/1';

/** An axis value: whatever one config key holds (lists such as eval.tasks are set whole by a single `--set`). */
export type AxisValue = string | number | boolean;

export type ExecutorName = 'local' | 'slurm';
export const EXECUTORS: readonly ExecutorName[] = ['local', 'slurm'];

/** The `slurm:` section of a sweep file: each key becomes an sbatch option of the batch script. */
export interface SlurmOptions {
  partition: string | null;
  account: string | null;
  qos: string | null;
  /** --time, Slurm's format (minutes, HH:MM:SS, D-HH:MM:SS); without one no signal comes before the end. */
  time: string | null;
  /** --gres, e.g. gpu:1 or gpu:h100:8; engine.gpus > 1 needs as many GPUs here. */
  gres: string | null;
  cpus_per_task: number | null;
  mem: string | null;
  /** The array's throttle (%K): tasks running at once; `--jobs` overrides it; null: as many as Slurm allows. */
  throttle: number | null;
  /**
   * Seconds before the time limit at which the batch shell gets USR1 (--signal=B:USR1@N); it then stops the run
   * with SIGTERM (a checkpoint after the step in flight) and requeues the task, which resumes. 0: no signal.
   */
  signal_before_s: number;
  /** --requeue: Slurm may requeue the task (node failure, preemption, the signal above); it then resumes. */
  requeue: boolean;
  /** Shell lines run before the training (module load, conda activate, export MLACTL_PYTHON=...). */
  setup: string[];
  /** Further sbatch options, each a whole `--key=value`, e.g. --constraint=h100. */
  sbatch: string[];
  /** The node executable on the compute nodes; null: the one running mlactl here. */
  node: string | null;
}

/** One run of the sweep: its folder and the config keys its axes set. */
export interface SweepRun {
  id: string;
  /** Relative to the sweep folder: runs/<id>. */
  dir: string;
  overrides: Record<string, AxisValue>;
}

/** sweep.json */
export interface SweepFile {
  format: typeof SWEEP_FORMAT;
  name: string;
  /** The sweep config it was made from (absolute path). */
  source: string;
  /** The config the sweep's `base:` named (absolute path). */
  base: string;
  /** That config resolved, with the sweep's `set:` applied and `name` set to the sweep's: base.resolved.yaml. */
  base_config: Config;
  /** The sweep's `set:` overrides, already inside base_config; kept to show what the sweep changed. */
  set: Record<string, AxisValue>;
  axes: { key: string; values: AxisValue[] }[];
  executor: ExecutorName;
  /** The working directory runs start in (relative data paths in the config are relative to it). */
  cwd: string;
  created_at: string;
  slurm: SlurmOptions | null;
  runs: SweepRun[];
}

/** exits/<id>.json: how a run's last attempt ended. */
export interface RunExit {
  exit_code: number;
  ended_at: string;
  executor: ExecutorName;
  /** Slurm: <array job>_<task>. */
  job: string | null;
  /** Slurm: the batch shell requeued the task after stopping it before its time limit. */
  requeued?: boolean;
}

/** One sbatch call, in slurm/jobs.json. */
export interface SlurmSubmission {
  job_id: string;
  /** The --array value given (indices into SweepFile.runs, with the throttle). */
  array: string;
  indices: number[];
  submitted_at: string;
  reason: 'run' | 'resume';
}

export interface SlurmJobsFile {
  submissions: SlurmSubmission[];
}

/**
 * A run's state, from its folder, its exit file and the scheduler:
 * queued / running (the scheduler or a live process has it), completed and diverged (results, never rerun),
 * interrupted (stopped with a checkpoint), cancelled (Slurm cancelled it or it hit its time limit), failed (ended
 * with an error or was killed), missing (never started). `sweep resume` reruns the last four.
 */
export type RunState = 'queued' | 'running' | 'completed' | 'diverged' | 'interrupted' | 'cancelled' | 'failed' | 'missing';
export const RESUMABLE_STATES: readonly RunState[] = ['interrupted', 'cancelled', 'failed', 'missing'];
