/**
 * The local executor: each run is `mlactl train --config SWEEP/base.resolved.yaml --set ... --run-dir
 * SWEEP/runs/<id>` in a child process of its own (--resume when the folder already holds something), `jobs` at a
 * time. A child's output goes to logs/<id>.log, its exit code to exits/<id>.json. Ctrl-C or SIGTERM is passed to
 * the running children once (each stops after its step with a checkpoint) and no further run starts.
 */
import { spawn, type ChildProcess } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { childExitCode, EXIT_DIVERGED, SIGNAL_EXIT_CODES } from '../exit-codes';
import { cliEntry } from '../paths';
import { BASE_CONFIG, logFile, writeExit } from './folder';
import { runSetArgs } from './plan';
import type { SweepFile, SweepRun } from './types';

export interface LocalOptions {
  dir: string;
  sweep: SweepFile;
  /** Indices into sweep.runs of the runs to train, in order. */
  indices: number[];
  jobs: number;
  /** One line per run started or ended. */
  note: (line: string) => void;
}

export interface LocalResult {
  runs: { id: string; exit_code: number }[];
  /** The signal that stopped the sweep early, if one did. */
  stopSignal: string | null;
}

/** The child's argv after `node`: the CLI and the train command for this run. */
export function trainArgs(dir: string, run: SweepRun): string[] {
  const runDir = path.join(dir, run.dir);
  const started = fs.existsSync(runDir) && fs.readdirSync(runDir).length > 0;
  return [
    cliEntry(), 'train', '--config', path.join(dir, BASE_CONFIG), ...runSetArgs(run).flatMap((s) => ['--set', s]), '--run-dir', runDir,
    ...(started ? ['--resume'] : []),
  ];
}

export async function runLocal(opts: LocalOptions): Promise<LocalResult> {
  const { dir, sweep } = opts;
  const children = new Set<ChildProcess>();
  let stopSignal = '';
  const onSignal = (sig: NodeJS.Signals) => () => {
    if (!stopSignal) opts.note(`${sig}: the running runs stop after their current step with a checkpoint; no new run starts (\`mlactl sweep resume ${dir}\` continues)`);
    stopSignal = sig;
    for (const child of children) child.kill(sig);
  };
  const handlers = (['SIGINT', 'SIGTERM'] as const).map((sig) => [sig, onSignal(sig)] as const);
  for (const [sig, h] of handlers) process.on(sig, h);

  const results: LocalResult['runs'] = [];
  let done = 0;
  const total = opts.indices.length;
  const width = String(total).length;
  const runOne = (run: SweepRun): Promise<number> =>
    new Promise((resolve) => {
      const args = trainArgs(dir, run);
      const log = fs.openSync(logFile(dir, run.id), 'a');
      fs.writeSync(log, `== ${new Date().toISOString()} local on ${os.hostname()}: mlactl ${args.slice(1).join(' ')}\n`);
      const started = Date.now();
      // Its own process group: a terminal's Ctrl-C reaches this process alone, which passes it on once.
      const child = spawn(process.execPath, args, { cwd: sweep.cwd, stdio: ['ignore', log, log], detached: true });
      children.add(child);
      let finished = false;
      const finish = (code: number) => {
        if (finished) return;
        finished = true;
        children.delete(child);
        fs.closeSync(log);
        writeExit(dir, run.id, { exit_code: code, ended_at: new Date().toISOString(), executor: 'local', job: null });
        done++;
        opts.note(`[${String(done).padStart(width)}/${total}] ${run.id}: ${describeExit(code)} (${Math.round((Date.now() - started) / 1000)} s; log ${shownPath(logFile(dir, run.id))})`);
        resolve(code);
      };
      child.on('error', () => finish(1));
      child.on('exit', (code, signal) => finish(childExitCode(code, signal)));
    });

  let next = 0;
  try {
    await Promise.all(
      Array.from({ length: Math.max(1, Math.min(opts.jobs, opts.indices.length)) }, async () => {
        while (next < opts.indices.length && !stopSignal) {
          const run = sweep.runs[opts.indices[next++]];
          results.push({ id: run.id, exit_code: await runOne(run) });
        }
      }),
    );
  } finally {
    for (const [sig, h] of handlers) process.off(sig, h);
  }
  return { runs: results, stopSignal: stopSignal || null };
}

/** Relative to the working directory when inside it, else absolute. */
function shownPath(p: string): string {
  const rel = path.relative(process.cwd(), p);
  return rel && !rel.startsWith('..') && !path.isAbsolute(rel) ? rel : p;
}

function describeExit(code: number): string {
  if (code === 0) return 'ended';
  if (code === EXIT_DIVERGED) return 'diverged';
  if (code === SIGNAL_EXIT_CODES.SIGINT || code === SIGNAL_EXIT_CODES.SIGTERM) return `stopped with a checkpoint (exit ${code})`;
  return `failed (exit ${code})`;
}
