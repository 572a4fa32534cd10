// What a user or a disk can do to a run, and what must survive it (docs/faults.md): signals, resuming what is
// complete, torn metrics lines, --force on a folder mlactl did not make, a full disk.
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { initBackend } from '../../src/backend';
import { systemErrorLine } from '../../src/cli/base';
import { loadConfig } from '../../src/config/load';
import { readMetrics } from '../../src/runfolder/metrics';
import type { MetricsRow } from '../../src/runfolder/types';
import type { ProgressSink } from '../../src/train/progress';
import { trainRun } from '../../src/train/run';
import { claimRunFolder } from '../../src/runfolder/folder';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'run.js');
const TINY = path.join(ROOT, 'configs/models/tiny.yaml');
const SETS = ['backend=wasm', 'model.variant=qk-clip', 'train.qk_clip.tau=0.02', 'train.eval_every_tokens=512', 'train.ckpt_every_tokens=100000'];

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-faults-'));
const deterministic = (rows: MetricsRow[]) => rows.map(({ tokens_per_s: _a, elapsed_s: _b, ...rest }) => rest);

function notes(): ProgressSink & { lines: string[] } {
  const lines: string[] = [];
  return { lines, start() {}, update() {}, stop() {}, note: (l: string) => void lines.push(l) };
}

beforeAll(async () => {
  await initBackend('wasm');
});

describe.each([['SIGINT', 130], ['SIGTERM', 143]] as const)('%s during training', (sig, code) => {
  test('stops within one step, writes a checkpoint at that step, exits with 128 + signal; the resume is bit-identical to a straight run', async () => {
    const dir = tmp();
    // 400 steps: far more than the test waits for, so only the signal can end the run early.
    const sets = [...SETS, 'train.tokens=51200'];
    const args = ['train', '--config', TINY, ...sets.flatMap((s) => ['--set', s])];
    const runDir = path.join(dir, 'signalled');
    const child = spawn(process.execPath, [BIN, ...args, '--run-dir', runDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => void (stderr += d.toString()));
    const metricsFile = path.join(runDir, 'metrics.jsonl');
    const rowsNow = () => (fs.existsSync(metricsFile) ? fs.readFileSync(metricsFile, 'utf8').split('\n').filter(Boolean).length : 0);
    const deadline = Date.now() + 60000;
    while (rowsNow() < 5 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    const stepAtSignal = rowsNow();
    expect(stepAtSignal).toBeGreaterThanOrEqual(5);
    child.kill(sig);
    const exit = await new Promise<number | null>((r) => child.on('close', r));
    expect(exit).toBe(code);

    const summary = JSON.parse(fs.readFileSync(path.join(runDir, 'summary.json'), 'utf8'));
    expect(summary.status).toBe('interrupted');
    // The step in flight when the signal came is finished; reading the row count races one more step at most.
    expect(summary.step).toBeGreaterThanOrEqual(stepAtSignal);
    expect(summary.step).toBeLessThanOrEqual(stepAtSignal + 2);
    expect(summary.step).toBeLessThan(400);
    expect(fs.existsSync(path.join(runDir, 'ckpt', `step-${summary.step}`, 'state.json'))).toBe(true);
    expect(stderr).toContain(`${sig}: stopping after this step`);

    if (sig === 'SIGINT') {
      // Resume to a short budget's end and compare with a straight run of the same budget: the interrupted
      // checkpoint holds everything (weights, moments, clipped weights, data cursor).
      const end = summary.step + 3;
      // Both under the original budget, so both follow the same schedule.
      const resumed = spawnSync(process.execPath, [BIN, ...args, '--run-dir', runDir, '--resume', '--stop-after-steps', String(end)], { encoding: 'utf8' });
      expect(resumed.status).toBe(0);
      const straight = await trainRun({ config: loadConfig(TINY, sets), runDir: path.join(dir, 'straight'), stopAfterSteps: end });
      expect(straight.summary.step).toBe(end);
      expect(deterministic(readMetrics(runDir))).toEqual(deterministic(readMetrics(straight.runDir)));
    }
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

test('--resume of a completed run leaves every file untouched and reports it complete', async () => {
  const dir = tmp();
  const cfg = loadConfig(TINY, [...SETS, 'train.tokens=512']);
  const runDir = path.join(dir, 'done');
  await trainRun({ config: cfg, runDir });
  const snapshot = () => Object.fromEntries(['summary.json', 'manifest.json', 'metrics.jsonl', 'config.resolved.yaml'].map((f) => [f, fs.readFileSync(path.join(runDir, f), 'utf8')]));
  const before = snapshot();
  const progress = notes();
  const again = await trainRun({ config: cfg, runDir, resume: true, progress });
  expect(again.summary).toEqual(JSON.parse(before['summary.json']));
  expect(again.summary.final_train_loss).not.toBeNull();
  expect(again.exitCode).toBe(0);
  expect(snapshot()).toEqual(before);
  expect(progress.lines.join('\n')).toMatch(/already completed/);

  // The same through an experiment: its completed arms stay as they are.
  const exp = spawnSync(process.execPath, [BIN, 'train', '--config', TINY, ...[...SETS, 'train.tokens=512', 'experiment.variants=[baseline,qk-norm]'].flatMap((s) => ['--set', s]), '--out', dir], { encoding: 'utf8' });
  expect(exp.status).toBe(0);
  const armSummary = path.join(dir, 'tiny', 'qk-norm', 'summary.json');
  const text = fs.readFileSync(armSummary, 'utf8');
  const res = spawnSync(process.execPath, [BIN, 'train', '--config', TINY, ...[...SETS, 'train.tokens=512', 'experiment.variants=[baseline,qk-norm]'].flatMap((s) => ['--set', s]), '--out', dir, '--resume'], { encoding: 'utf8' });
  expect(res.status).toBe(0);
  expect(fs.readFileSync(armSummary, 'utf8')).toBe(text);
  expect(JSON.parse(text).final_train_loss).not.toBeNull();
  fs.rmSync(dir, { recursive: true, force: true });
});

test('a torn last line in the metrics files is dropped with a warning and the resume matches a straight run', async () => {
  const dir = tmp();
  const cfg = loadConfig(TINY, [...SETS, 'train.tokens=1024']);
  const runDir = path.join(dir, 'torn');
  await trainRun({ config: cfg, runDir, stopAfterSteps: 4 });
  // What a kill or a full disk leaves: half a row without its newline, in each file.
  fs.appendFileSync(path.join(runDir, 'metrics.jsonl'), '{"step":5,"tokens":640,"lr":0.00');
  fs.appendFileSync(path.join(runDir, 'metrics.csv'), '5,640,0.0009');
  fs.appendFileSync(path.join(runDir, 'maxlogits.csv'), '5,64');
  const progress = notes();
  const resumed = await trainRun({ config: cfg, runDir, resume: true, progress });
  expect(resumed.summary.status).toBe('completed');
  expect(progress.lines.filter((l) => /torn last line/.test(l))).toHaveLength(3);
  const straight = await trainRun({ config: cfg, runDir: path.join(dir, 'straight') });
  expect(deterministic(readMetrics(runDir))).toEqual(deterministic(readMetrics(straight.runDir)));
  for (const f of ['metrics.csv', 'maxlogits.csv']) {
    const strip = (t: string) => t.split('\n').map((l) => l.split(',').filter((_, i, a) => f !== 'metrics.csv' || (i !== a.length - 2 && i !== a.length - 3)).join(','));
    expect(strip(fs.readFileSync(path.join(runDir, f), 'utf8'))).toEqual(strip(fs.readFileSync(path.join(straight.runDir, f), 'utf8')));
  }
  // A damaged line that is not the last is refused by name rather than guessed at.
  const lines = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').split('\n');
  lines[2] = '{"step":3,"tok';
  fs.writeFileSync(path.join(runDir, 'metrics.jsonl'), lines.join('\n'));
  expect(() => readMetrics(runDir)).toThrow(/metrics.jsonl: line 3 is not a metrics row/);
  fs.rmSync(dir, { recursive: true, force: true });
});

describe('--force deletes only folders mlactl made', () => {
  test('a folder with other files is refused by name and left intact', () => {
    const dir = tmp();
    fs.writeFileSync(path.join(dir, 'thesis.tex'), '\\documentclass{article}');
    const r = spawnSync(process.execPath, [BIN, 'train', '--config', TINY, '--set', 'backend=wasm', '--set', 'train.tokens=512', '--run-dir', dir, '--force'], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr.trim().split('\n')).toEqual([`mlactl: ${dir}: --force refuses to delete it: it holds thesis.tex, which is not part of an mlactl run folder`]);
    expect(fs.readFileSync(path.join(dir, 'thesis.tex'), 'utf8')).toContain('documentclass');
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('an experiment folder with a stranger inside one arm is refused; run and experiment folders are replaced', async () => {
    const dir = tmp();
    const runDir = path.join(dir, 'run');
    await trainRun({ config: loadConfig(TINY, [...SETS, 'train.tokens=512']), runDir });
    claimRunFolder(runDir, { resume: false, force: true }).release();
    expect(fs.readdirSync(runDir)).toEqual([]);

    const exp = path.join(dir, 'exp');
    fs.mkdirSync(path.join(exp, 'baseline', 'ckpt'), { recursive: true });
    fs.writeFileSync(path.join(exp, 'experiment.json'), '{}');
    fs.writeFileSync(path.join(exp, 'baseline', 'notes.txt'), 'mine');
    expect(() => claimRunFolder(exp, { resume: false, force: true })).toThrow(/refuses to delete it: it holds baseline, which is not part of an mlactl experiment/);
    expect(fs.existsSync(path.join(exp, 'baseline', 'notes.txt'))).toBe(true);
    fs.rmSync(path.join(exp, 'baseline', 'notes.txt'));
    claimRunFolder(exp, { resume: false, force: true }).release();
    expect(fs.readdirSync(exp)).toEqual([]);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

test('file-system failures become one line naming the file', () => {
  const enospc = Object.assign(new Error('ENOSPC: no space left on device, write'), { code: 'ENOSPC', path: 'runs/x/metrics.jsonl', syscall: 'write' });
  expect(systemErrorLine(enospc)).toBe('runs/x/metrics.jsonl: no space left on the device (write)');
  const eacces = Object.assign(new Error('EACCES'), { code: 'EACCES', path: 'runs/x', syscall: 'mkdir' });
  expect(systemErrorLine(eacces)).toBe('runs/x: permission denied (mkdir)');
  expect(systemErrorLine(new Error('plain'))).toBeNull();
});

test('two processes on one run folder: a live lock refuses the second, a dead one is taken over', () => {
  const dir = tmp();
  const runDir = path.join(dir, 'locked');
  fs.mkdirSync(runDir);
  fs.writeFileSync(path.join(runDir, 'config.resolved.yaml'), 'name: x\n');
  // A live process other than this one: the parent of the test runner's worker.
  fs.writeFileSync(path.join(runDir, 'run.lock'), `${process.ppid}\n`);
  expect(() => claimRunFolder(runDir, { resume: true, force: false })).toThrow(`run is locked by running process ${process.ppid}`);
  // A pid that cannot be alive (above the kernel's pid range).
  fs.writeFileSync(path.join(runDir, 'run.lock'), '4194305\n');
  const claim = claimRunFolder(runDir, { resume: true, force: false });
  expect(fs.readFileSync(path.join(runDir, 'run.lock'), 'utf8').trim()).toBe(String(process.pid));
  claim.release();
  expect(fs.existsSync(path.join(runDir, 'run.lock'))).toBe(false);
  fs.rmSync(dir, { recursive: true, force: true });
});

test('an experiment folder given where a run is expected: the error lists its arms', () => {
  const dir = tmp();
  const exp = spawnSync(process.execPath, [BIN, 'train', '--config', TINY, ...[...SETS, 'train.tokens=512', 'experiment.variants=[baseline,qk-norm]'].flatMap((s) => ['--set', s]), '--out', dir], { encoding: 'utf8' });
  expect(exp.status).toBe(0);
  const expDir = path.join(dir, 'tiny');
  for (const cmd of [['score', '--run', expDir, '--text', 'It was'], ['eval', '--run', expDir]]) {
    const r = spawnSync(process.execPath, [BIN, ...cmd], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    expect(r.stderr.trim()).toBe(`mlactl: ${expDir}: an experiment folder, not a run; give one of its arms: ${path.join(expDir, 'baseline')}, ${path.join(expDir, 'qk-norm')}`);
  }
  fs.rmSync(dir, { recursive: true, force: true });
});
