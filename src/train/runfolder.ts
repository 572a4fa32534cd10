/**
 * Run folders: creation rules (never clobber a run by accident), a lock so two processes cannot share one, and
 * the small JSON files (manifest, summary) written atomically.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { UserError } from '../errors';
import { writeFileAtomic } from '../model/safetensors';

import { PACKAGE_ROOT } from '../paths';

export type RunStatus = 'completed' | 'diverged' | 'interrupted' | 'running';

export interface RunSummary {
  status: RunStatus;
  arm: string;
  experiment: string | null;
  variant: string;
  seed: number;
  lr: number;
  step: number;
  total_steps: number;
  tokens: number;
  final_train_loss: number | null;
  final_val_loss: number | null;
  best_val_loss: number | null;
  diverged_at_step: number | null;
  max_logit_peak: number | null;
  heads_clipped_total: number;
  tokens_per_s: number | null;
  elapsed_s: number;
}

export interface RunManifest {
  mlactl_version: string;
  git_commit: string | null;
  git_dirty: boolean | null;
  backend: string;
  backend_reason: string;
  device: string;
  node_version: string;
  machine: { platform: string; arch: string; cpus: number; cpu_model: string; total_mem_gib: number; hostname: string };
  data_source: string;
  data_hash: string;
  data_origin: string;
  tokenizer: string;
  tokenizer_hash: string;
  val_hash: string;
  split: { train: number; val: number; test: number; test_ids: string[] };
  parameters: number;
  started_at: string;
  ended_at: string | null;
  resumed_at: string[];
}

export function mlactlVersion(): string {
  return (JSON.parse(fs.readFileSync(path.join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

export function gitState(): { commit: string | null; dirty: boolean | null } {
  try {
    const commit = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: PACKAGE_ROOT, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no'], { cwd: PACKAGE_ROOT, stdio: ['ignore', 'pipe', 'ignore'] }).toString().trim() !== '';
    return { commit, dirty };
  } catch {
    return { commit: null, dirty: null };
  }
}

export function machineInfo(): RunManifest['machine'] {
  const cpus = os.cpus();
  return {
    platform: os.platform(),
    arch: os.arch(),
    cpus: cpus.length,
    cpu_model: cpus[0]?.model ?? 'unknown',
    total_mem_gib: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    hostname: os.hostname(),
  };
}

export function writeJson(file: string, value: unknown): void {
  writeFileAtomic(file, JSON.stringify(value, null, 2) + '\n');
}

export function readJson<T>(file: string): T {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch (e) {
    throw new UserError(`${file}: ${fs.existsSync(file) ? 'invalid JSON' : 'file not found'}`);
  }
}

const LOCK = 'run.lock';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/**
 * Claim `dir` for this process. A fresh run refuses an existing folder unless `force` (which empties it) or
 * `resume`. The lock names the owner pid; a lock left by a dead process (SIGKILL) is taken over.
 * Returns whether the folder was created by this call (so a failed start can remove it again).
 */
export function claimRunFolder(dir: string, mode: { resume: boolean; force: boolean }): { created: boolean; release(): void } {
  const exists = fs.existsSync(dir) && fs.readdirSync(dir).length > 0;
  if (exists && !mode.resume && !mode.force) {
    throw new UserError(`${dir}: run folder exists; pass --resume to continue it or --force to start over`);
  }
  if (!exists && mode.resume) throw new UserError(`${dir}: nothing to resume (no such run folder)`);
  const lockFile = path.join(dir, LOCK);
  if (exists && fs.existsSync(lockFile)) {
    const pid = Number(fs.readFileSync(lockFile, 'utf8').trim());
    if (pid && pid !== process.pid && alive(pid)) throw new UserError(`${dir}: run is locked by running process ${pid}`);
  }
  let created = false;
  try {
    if (exists && mode.force && !mode.resume) fs.rmSync(dir, { recursive: true, force: true });
    created = !fs.existsSync(dir);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(lockFile, `${process.pid}\n`);
  } catch (e) {
    throw new UserError(`${dir}: run folder is not writable (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return {
    created,
    release: () => {
      try {
        if (fs.readFileSync(lockFile, 'utf8').trim() === String(process.pid)) fs.unlinkSync(lockFile);
      } catch {
        /* already gone */
      }
    },
  };
}
