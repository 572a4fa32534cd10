/**
 * The sweep folder (layout in ./types.ts): created whole or not at all, read back with its format checked, and the
 * small per-run files the executors leave beside the run folders (exit codes, logs).
 */
import * as fs from 'fs';
import * as path from 'path';
import { configToYaml } from '../config/load';
import { UserError } from '../errors';
import { alive } from '../runfolder/folder';
import { readJson, writeFileAtomic, writeJson } from '../runfolder/atomic';
import type { SweepPlan } from './plan';
import { SWEEP_FORMAT, type ExecutorName, type RunExit, type SlurmOptions, type SweepFile } from './types';

export const SWEEP_JSON = 'sweep.json';
export const BASE_CONFIG = 'base.resolved.yaml';
const LOCK = 'sweep.lock';

export const exitFile = (dir: string, id: string) => path.join(dir, 'exits', `${id}.json`);
export const logFile = (dir: string, id: string) => path.join(dir, 'logs', `${id}.log`);

export function sweepFileOf(plan: SweepPlan, executor: ExecutorName, slurm: SlurmOptions | null): SweepFile {
  return {
    format: SWEEP_FORMAT,
    name: plan.spec.name,
    source: plan.spec.source,
    base: plan.spec.base,
    base_config: plan.baseConfig,
    set: Object.fromEntries(plan.spec.set.map((s) => [s.key, s.value])),
    axes: plan.spec.axes.map((a) => ({ key: a.key, values: a.values })),
    executor,
    cwd: process.cwd(),
    created_at: new Date().toISOString(),
    slurm,
    runs: plan.runs.map((r) => ({ id: r.id, dir: r.dir, overrides: r.overrides })),
  };
}

/** Refuses a folder that is there and not empty, unless it is a sweep folder and `force` (which deletes it). */
export function prepareSweepDir(dir: string, force: boolean): void {
  if (!fs.existsSync(dir)) return;
  if (!fs.statSync(dir).isDirectory()) throw new UserError(`${dir}: exists and is not a folder`);
  if (fs.readdirSync(dir).length === 0) return;
  if (!force) throw new UserError(`${dir}: sweep folder exists; \`mlactl sweep resume ${dir}\` continues it, --force starts over`);
  if (!fs.existsSync(path.join(dir, SWEEP_JSON))) throw new UserError(`${dir}: --force refuses to delete it: it holds no ${SWEEP_JSON}, so it is not a sweep folder`);
}

/**
 * Writes the folder: base.resolved.yaml, sweep.json, and empty runs/, logs/, exits/ (and slurm/ with its script).
 * Any failure removes what this call made, so a sweep folder either is complete or is not there.
 */
export function createSweepFolder(dir: string, sweep: SweepFile, extra: Record<string, string> = {}): void {
  const created = !fs.existsSync(dir);
  try {
    fs.mkdirSync(dir, { recursive: true });
    for (const sub of ['runs', 'logs', 'exits']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
    writeFileAtomic(path.join(dir, BASE_CONFIG), configToYaml(sweep.base_config));
    for (const [rel, text] of Object.entries(extra)) {
      fs.mkdirSync(path.dirname(path.join(dir, rel)), { recursive: true });
      writeFileAtomic(path.join(dir, rel), text);
    }
    // Last: a folder with a sweep.json is a whole sweep folder.
    writeJson(path.join(dir, SWEEP_JSON), sweep);
  } catch (e) {
    if (created) fs.rmSync(dir, { recursive: true, force: true });
    else for (const entry of fs.readdirSync(dir)) fs.rmSync(path.join(dir, entry), { recursive: true, force: true });
    if (e instanceof UserError) throw e;
    throw new UserError(`${dir}: cannot write the sweep folder (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}

export function readSweep(dir: string): SweepFile {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new UserError(`${dir}: no such sweep folder`);
  const file = path.join(dir, SWEEP_JSON);
  if (!fs.existsSync(file)) throw new UserError(`${dir}: not a sweep folder (no ${SWEEP_JSON})`);
  const sweep = readJson<SweepFile>(file);
  if (sweep.format !== SWEEP_FORMAT) throw new UserError(`${file}: format ${JSON.stringify(sweep.format)} is not ${SWEEP_FORMAT}`);
  if (!Array.isArray(sweep.runs) || !sweep.runs.every((r) => typeof r.id === 'string' && typeof r.dir === 'string')) {
    throw new UserError(`${file}: key \`runs\` must list {id, dir, overrides}`);
  }
  return sweep;
}

export function writeExit(dir: string, id: string, exit: RunExit): void {
  writeJson(exitFile(dir, id), exit);
}

export function readExit(dir: string, id: string): RunExit | null {
  const file = exitFile(dir, id);
  if (!fs.existsSync(file)) return null;
  try {
    const parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as RunExit;
    return typeof parsed.exit_code === 'number' ? parsed : null;
  } catch {
    return null; // a torn file from a kill: as if the attempt had left none
  }
}

/** The pid of a live local executor working on this sweep, else null (a lock left by a killed one is ignored). */
export function sweepLockHolder(dir: string): number | null {
  const file = path.join(dir, LOCK);
  if (!fs.existsSync(file)) return null;
  const pid = Number(fs.readFileSync(file, 'utf8').trim());
  return pid && pid !== process.pid && alive(pid) ? pid : null;
}

/** Claims the sweep for this process's local executor, so a second `sweep resume` cannot start its runs twice. */
export function claimSweep(dir: string): () => void {
  const holder = sweepLockHolder(dir);
  if (holder !== null) throw new UserError(`${dir}: process ${holder} is running this sweep; wait for it or stop it first`);
  const file = path.join(dir, LOCK);
  fs.writeFileSync(file, `${process.pid}\n`);
  return () => {
    try {
      if (fs.readFileSync(file, 'utf8').trim() === String(process.pid)) fs.unlinkSync(file);
    } catch {
      /* already gone */
    }
  };
}
