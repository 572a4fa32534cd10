/**
 * The Slurm executor: one `sbatch --array` job for the whole sweep, one array task per run (the task id indexes
 * sweep.json's runs), a throttle (%K) on how many run at once. The batch script is generated once and kept in the
 * sweep folder; `sweep resume` submits the same script again with only the runs to redo in --array.
 *
 * Every task runs `mlactl train --config SWEEP/base.resolved.yaml --set ... --run-dir SWEEP/runs/<id>`, with
 * --resume when the folder already holds something, so a requeued, killed or resumed task continues from its newest
 * checkpoint. Before the time limit (--signal=B:USR1@N) the batch shell stops the run with SIGTERM (train finishes
 * the step, checkpoints, exits 143) and requeues the task. The torch engine with engine.gpus > 1 starts torchrun
 * itself on the task's node, one process per GPU that slurm.gres grants.
 */
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';
import { readJson, writeJson } from '../runfolder/atomic';
import { cliEntry } from '../paths';
import { runSetArgs } from './plan';
import { BASE_CONFIG } from './folder';
import type { Config } from '../config/types';
import type { SlurmJobsFile, SlurmOptions, SlurmSubmission, SweepFile } from './types';

export const SCRIPT = path.join('slurm', 'sweep.sbatch');
const JOBS = path.join('slurm', 'jobs.json');

/** Quoted for bash: single quotes, with each ' written as '\''. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_./=:,@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/** The options of the batch script's #SBATCH lines (--array is given per submission). */
export function sbatchOptions(sweep: SweepFile, dir: string): string[] {
  const s = sweep.slurm!;
  const opts = [
    `--job-name=mlactl-${sweep.name}`,
    `--output=${path.join(dir, 'slurm', 'logs', '%A_%a.out')}`,
    '--open-mode=append',
    `--chdir=${sweep.cwd}`,
    '--ntasks=1',
  ];
  if (s.partition) opts.push(`--partition=${s.partition}`);
  if (s.account) opts.push(`--account=${s.account}`);
  if (s.qos) opts.push(`--qos=${s.qos}`);
  if (s.time) opts.push(`--time=${s.time}`);
  if (s.gres) opts.push(`--gres=${s.gres}`);
  if (s.cpus_per_task) opts.push(`--cpus-per-task=${s.cpus_per_task}`);
  if (s.mem) opts.push(`--mem=${s.mem}`);
  if (s.signal_before_s > 0) opts.push(`--signal=B:USR1@${s.signal_before_s}`);
  opts.push(s.requeue ? '--requeue' : '--no-requeue');
  return [...opts, ...s.sbatch];
}

/** The batch script: #SBATCH options, the setup lines, one case per run, and the signal handling around train. */
export function batchScript(sweep: SweepFile, dir: string, entry = { node: process.execPath, cli: cliEntry() }): string {
  const s = sweep.slurm!;
  const node = s.node ?? entry.node;
  const cases = sweep.runs.map((run, i) => `  ${i}) RUN=${shellQuote(run.id)}; SETS=(${runSetArgs(run).flatMap((a) => ['--set', shellQuote(a)]).join(' ')}) ;;`);
  return [
    '#!/bin/bash',
    `# mlactl sweep ${sweep.name}: one array task per run; the task id indexes the runs of sweep.json. Written by`,
    '# `mlactl sweep run`; `mlactl sweep resume` submits it again with --array naming only the runs to redo.',
    ...sbatchOptions(sweep, dir).map((o) => `#SBATCH ${o}`),
    'set -u',
    ...(s.setup.length ? ['# slurm.setup of the sweep file', ...s.setup] : []),
    `SWEEP=${shellQuote(dir)}`,
    `NODE=${shellQuote(node)}`,
    `MLACTL=${shellQuote(entry.cli)}`,
    'case "${SLURM_ARRAY_TASK_ID:-}" in',
    ...cases,
    '  *) echo "mlactl sweep: no run has array index ${SLURM_ARRAY_TASK_ID:-(none)}" >&2; exit 2 ;;',
    'esac',
    'DIR="$SWEEP/runs/$RUN"',
    `ARGS=(train --config "$SWEEP/${BASE_CONFIG}" "\${SETS[@]}" --run-dir "$DIR")`,
    '# A run folder that holds anything continues from its newest checkpoint (after a requeue, a kill, sweep resume).',
    'if [ -n "$(ls -A "$DIR" 2>/dev/null)" ]; then ARGS+=(--resume); fi',
    'TASK="${SLURM_ARRAY_JOB_ID:-0}_${SLURM_ARRAY_TASK_ID}"',
    'echo "== $(date -u +%FT%TZ) task $TASK on $(hostname): mlactl ${ARGS[*]}" >>"$SWEEP/logs/$RUN.log"',
    '# USR1 (sent before the time limit by #SBATCH --signal, or by hand) reaches this shell alone: stop train, which',
    `# checkpoints after the step in flight, then ${s.requeue ? 'requeue the task' : 'end (`mlactl sweep resume` continues it)'}. scancel and the time limit`,
    '# signal every process of the job, train included, so on TERM this shell only waits: a second TERM would tell',
    '# train to stop at once.',
    'requeue=0',
    'trap \'requeue=1; kill -TERM "$child" 2>/dev/null\' USR1',
    "trap 'true' TERM",
    '"$NODE" "$MLACTL" "${ARGS[@]}" >>"$SWEEP/logs/$RUN.log" 2>&1 &',
    'child=$!',
    'while kill -0 "$child" 2>/dev/null; do wait "$child"; done',
    'wait "$child"; code=$?',
    'requeued=false',
    ...(s.requeue ? ['if [ "$requeue" = 1 ] && [ "$code" = 143 ]; then requeued=true; fi'] : []),
    'tmp="$SWEEP/exits/.$RUN.json.$$"',
    'printf \'{"exit_code": %d, "ended_at": "%s", "executor": "slurm", "job": "%s", "requeued": %s}\\n\' "$code" "$(date -u +%FT%TZ)" "$TASK" "$requeued" \\',
    '  >"$tmp" && mv -f "$tmp" "$SWEEP/exits/$RUN.json"',
    ...(s.requeue ? ['if [ "$requeued" = true ]; then scontrol requeue "$TASK"; fi'] : []),
    'exit "$code"',
    '',
  ].join('\n');
}

/** `0-17%4`, or `3,7%4` for some runs: the runs' indices, compressed into ranges, and the throttle. */
export function arraySpec(indices: number[], throttle: number | null): string {
  const sorted = [...new Set(indices)].sort((a, b) => a - b);
  const parts: string[] = [];
  for (let i = 0; i < sorted.length; ) {
    let j = i;
    while (j + 1 < sorted.length && sorted[j + 1] === sorted[j] + 1) j++;
    parts.push(j === i ? String(sorted[i]) : `${sorted[i]}-${sorted[j]}`);
    i = j + 1;
  }
  return parts.join(',') + (throttle ? `%${throttle}` : '');
}

function slurmCommand(cmd: string, args: string[], input?: string): { code: number; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { input, encoding: 'utf8', timeout: 60000 });
  if (r.error) {
    const code = (r.error as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UserError(`--executor slurm: ${cmd} not found on the PATH (Slurm's client commands must be installed where mlactl runs)`);
    throw new UserError(`${cmd}: ${code ?? r.error.message}`);
  }
  return { code: r.status ?? 1, stdout: r.stdout, stderr: r.stderr };
}

/** Slurm's complaint as one line: its `error:` lines without the prefixes, else the last line it printed. */
function slurmMessage(stderr: string): string {
  const lines = stderr.split('\n').map((l) => l.trim()).filter(Boolean);
  const errors = lines.filter((l) => /error/i.test(l)).map((l) => l.replace(/^(s\w+: )?error: /i, ''));
  return [...new Set(errors.length ? errors : lines.slice(-1))].join('; ') || 'no message';
}

/**
 * `sbatch --test-only` on the script (given on stdin, nothing submitted): Slurm itself checks partition, account,
 * QOS, time, GRES and the rest against the cluster. A refusal is one line and exit 2, before anything is written.
 */
export function validateSbatch(script: string, array: string): void {
  const r = slurmCommand('sbatch', ['--test-only', `--array=${array}`], script);
  if (r.code !== 0) throw new UserError(`slurm: sbatch rejects the sweep's batch job: ${slurmMessage(r.stderr)}`);
}

export function readJobs(dir: string): SlurmJobsFile {
  const file = path.join(dir, JOBS);
  return fs.existsSync(file) ? readJson<SlurmJobsFile>(file) : { submissions: [] };
}

/** Submits the kept script for the runs at `indices`; the submission is added to slurm/jobs.json. */
export function submitArray(dir: string, indices: number[], throttle: number | null, reason: SlurmSubmission['reason']): SlurmSubmission {
  const array = arraySpec(indices, throttle);
  fs.mkdirSync(path.join(dir, 'slurm', 'logs'), { recursive: true });
  const r = slurmCommand('sbatch', ['--parsable', `--array=${array}`, path.join(dir, SCRIPT)]);
  const jobId = r.stdout.trim().split(';')[0];
  if (r.code !== 0 || !/^\d+$/.test(jobId)) throw new UserError(`slurm: sbatch did not submit the sweep: ${slurmMessage(r.stderr || r.stdout)}`, 1);
  const submission: SlurmSubmission = { job_id: jobId, array, indices: [...indices].sort((a, b) => a - b), submitted_at: new Date().toISOString(), reason };
  const jobs = readJobs(dir);
  jobs.submissions.push(submission);
  writeJson(path.join(dir, JOBS), jobs);
  return submission;
}

/** Slurm's states in which a task still has (or will have) a process: `sweep resume` leaves such runs alone. */
const ACTIVE = new Set(['PENDING', 'RUNNING', 'CONFIGURING', 'COMPLETING', 'SUSPENDED', 'REQUEUED', 'REQUEUE_HOLD', 'REQUEUE_FED', 'RESIZING', 'SIGNALING', 'STAGE_OUT', 'STOPPED', 'RESV_DEL_HOLD']);

export const isActive = (state: string) => ACTIVE.has(state);

export interface QueueView {
  /** By `<job>_<task>`: Slurm's state of that array task (PENDING, RUNNING, COMPLETED, CANCELLED, ...). */
  tasks: Map<string, string>;
  /** Why the queue could not be read (no controller, no squeue); null when it was. */
  error: string | null;
}

/** Expands a task field: `3`, or a pending remainder such as `[4-9,12%2]`. */
function taskIndices(field: string): number[] {
  const inner = field.replace(/^\[/, '').replace(/\]$/, '').replace(/%\d+$/, '');
  return inner.split(',').flatMap((part) => {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part);
    if (!m) return [];
    const from = Number(m[1]);
    const to = m[2] === undefined ? from : Number(m[2]);
    return Array.from({ length: to - from + 1 }, (_, k) => from + k);
  });
}

/**
 * The state of every task of these array jobs: squeue (which keeps finished jobs for MinJobAge), then sacct for the
 * jobs squeue no longer knows, where accounting is enabled.
 */
export function queueView(jobIds: string[]): QueueView {
  const tasks = new Map<string, string>();
  if (jobIds.length === 0) return { tasks, error: null };
  let error: string | null = null;
  const unknown: string[] = [];
  for (const id of jobIds) {
    let r;
    try {
      r = slurmCommand('squeue', ['-h', '-r', '-t', 'all', '-j', id, '-o', '%F|%K|%T']);
    } catch (e) {
      return { tasks, error: (e as Error).message };
    }
    if (r.code !== 0) {
      if (/invalid job id/i.test(r.stderr)) unknown.push(id);
      else error = `squeue: ${slurmMessage(r.stderr)}`;
      continue;
    }
    const before = tasks.size;
    for (const line of r.stdout.split('\n')) {
      const [job, task, state] = line.trim().split('|');
      if (!job || !state) continue;
      for (const i of taskIndices(task)) tasks.set(`${job}_${i}`, state);
    }
    if (tasks.size === before) unknown.push(id);
  }
  if (unknown.length) {
    try {
      const r = slurmCommand('sacct', ['-n', '-P', '-X', '-j', unknown.join(','), '-o', 'JobID,State']);
      if (r.code === 0) {
        for (const line of r.stdout.split('\n')) {
          const [jobField, stateField] = line.trim().split('|');
          const m = /^(\d+)_(.+)$/.exec(jobField ?? '');
          if (!m || !stateField) continue;
          const state = stateField.split(' ')[0]; // "CANCELLED by 0"
          for (const i of taskIndices(m[2])) if (!tasks.has(`${m[1]}_${i}`)) tasks.set(`${m[1]}_${i}`, state);
        }
      }
    } catch {
      // no sacct: those runs are judged by their folders alone
    }
  }
  return { tasks, error };
}

/** The newest submission of each run index: the one whose task speaks for the run now. */
export function latestTaskOf(jobs: SlurmJobsFile, runCount: number): (string | null)[] {
  const latest: (string | null)[] = new Array(runCount).fill(null);
  for (const s of jobs.submissions) for (const i of s.indices) if (i < runCount) latest[i] = `${s.job_id}_${i}`;
  return latest;
}

/** Requests for GPUs in a --gres value: `gpu:4`, `gpu:h100:8` -> 4, 8; `gpu` alone -> 1; none -> 0. */
export function gresGpus(gres: string | null): number {
  if (!gres) return 0;
  let total = 0;
  for (const part of gres.split(',')) {
    const m = /^gpu(?::([^:]+))?(?::(\d+))?$/.exec(part.trim());
    if (!m) continue;
    total += m[2] !== undefined ? Number(m[2]) : m[1] !== undefined && /^\d+$/.test(m[1]) ? Number(m[1]) : 1;
  }
  return total;
}

/** The sweep folder's paths go into #SBATCH lines, and GPUs asked for by engine.gpus must be granted by --gres. */
export function checkSlurmOptions(dir: string, cwd: string, configs: Config[], options: SlurmOptions): void {
  const spaced = [dir, cwd].find((p) => /\s/.test(p));
  if (spaced) throw new UserError(`${spaced}: a path with spaces cannot go into #SBATCH lines; use a sweep folder and working directory without spaces`);
  const gpus = Math.max(...configs.map((c) => (c.engine.name === 'tfjs' ? 1 : c.engine.gpus)));
  const granted = gresGpus(options.gres);
  if (gpus > 1 && granted < gpus) {
    throw new UserError(`slurm.gres: the runs start ${gpus} processes (engine.gpus), one per GPU, but ${options.gres ? `--gres=${options.gres} grants ${granted}` : 'no GPUs are requested'}; set slurm.gres: gpu:${gpus}`);
  }
}
