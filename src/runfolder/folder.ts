/**
 * Run folders: creation rules (never clobber a run by accident), a lock so two processes cannot share one, and
 * the small JSON files (manifest, summary) written atomically.
 */
import { execFileSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { UserError } from '../errors';

import { PACKAGE_ROOT } from '../paths';
import type { ExperimentFile, RunManifest } from './types';

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

const LOCK = 'run.lock';

/** What mlactl writes into a run folder; `--force` empties only folders made of these (see replaceableFolder). */
const RUN_FOLDER_ENTRIES = new Set([
  'config.resolved.yaml', 'manifest.json', 'metrics.jsonl', 'metrics.csv', 'maxlogits.csv', 'summary.json', 'ckpt', 'eval', LOCK,
]);
/** An experiment folder holds these beside one run folder per arm. */
const EXPERIMENT_ENTRIES = new Set(['experiment.json', 'compare']);

/**
 * `--force` deletes a folder, so it must be one that mlactl made: empty, a run folder, or an experiment folder of
 * run folders. Anything else (a typo'd `--run-dir` pointing at someone's work) is refused before anything is
 * removed. Returns the reason it is not replaceable, or null.
 */
export function notReplaceableReason(dir: string): string | null {
  const entries = fs.readdirSync(dir);
  if (entries.length === 0) return null;
  if (entries.every((e) => RUN_FOLDER_ENTRIES.has(e))) return null;
  if (entries.includes('experiment.json')) {
    const stranger = entries.find((e) => {
      if (EXPERIMENT_ENTRIES.has(e)) return false;
      const sub = path.join(dir, e);
      return !fs.statSync(sub).isDirectory() || !fs.readdirSync(sub).every((x) => RUN_FOLDER_ENTRIES.has(x));
    });
    return stranger === undefined ? null : `it holds ${stranger}, which is not part of an mlactl experiment`;
  }
  const stranger = entries.find((e) => !RUN_FOLDER_ENTRIES.has(e))!;
  return `it holds ${stranger}, which is not part of an mlactl run folder`;
}

/** Empty `dir` for `--force`, or refuse (exit 2) when it is not a folder mlactl made. */
export function removeForForce(dir: string): void {
  if (!fs.existsSync(dir)) return;
  if (!fs.statSync(dir).isDirectory()) throw new UserError(`${dir}: --force refuses to delete it: not a folder`);
  const why = notReplaceableReason(dir);
  if (why) throw new UserError(`${dir}: --force refuses to delete it: ${why}`);
  fs.rmSync(dir, { recursive: true, force: true });
}

/** Whether a process with this pid exists (EPERM: it does, owned by someone else). */
export function alive(pid: number): boolean {
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
    if (exists && mode.force && !mode.resume) removeForForce(dir);
    created = !fs.existsSync(dir);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(lockFile, `${process.pid}\n`);
  } catch (e) {
    if (e instanceof UserError) throw e;
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

/**
 * For a folder given where a run or model folder was expected: when it is an experiment folder, the error lists
 * its arms (the run folders inside), so the user can pick one; otherwise null.
 */
export function experimentArmsHint(dir: string): string | null {
  const file = path.join(dir, 'experiment.json');
  if (!fs.existsSync(file)) return null;
  let arms: string[] = [];
  try {
    arms = (JSON.parse(fs.readFileSync(file, 'utf8')) as ExperimentFile).arms.map((a) => path.join(dir, a.dir));
  } catch {
    arms = fs.readdirSync(dir).filter((e) => fs.existsSync(path.join(dir, e, 'config.resolved.yaml'))).map((e) => path.join(dir, e));
  }
  return `${dir}: an experiment folder, not a run; give one of its arms: ${arms.join(', ')}`;
}
