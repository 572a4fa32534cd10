// The local executor end to end through the built CLI: Ctrl-C reaches every running run once (each stops after its
// step with a checkpoint), no new run starts, the sweep exits 130; `sweep resume` then trains only what is left,
// each run from its checkpoint, and leaves the completed run alone.
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { RunSummary } from '../../src/runfolder/types';
import type { SweepFile } from '../../src/sweep/types';
import type { SweepOutcome } from '../../src/sweep/sweep';
import type { SweepStatus } from '../../src/sweep/status';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'run.js');

beforeAll(() => {
  if (!fs.existsSync(path.join(ROOT, 'dist/commands/sweep/run.js'))) throw new Error('dist/commands/sweep/run.js is missing: build first with `npm run build`');
});

const metricsStep = (runDir: string): number => {
  try {
    const lines = fs.readFileSync(path.join(runDir, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean);
    return lines.length ? JSON.parse(lines[lines.length - 1]).step : 0;
  } catch {
    return 0;
  }
};
const summaryOf = (runDir: string): RunSummary => JSON.parse(fs.readFileSync(path.join(runDir, 'summary.json'), 'utf8'));

test('Ctrl-C stops the running runs with checkpoints and starts no other (exit 130); resume finishes only those, from their checkpoints', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-sweep-local-'));
  const file = path.join(dir, 'three.yaml');
  // Three runs, two at a time, 100 steps each: far longer than the test waits before Ctrl-C.
  fs.writeFileSync(file, [
    `base: ${path.join(ROOT, 'configs/models/tiny.yaml')}`,
    'set: {backend: wasm, train.tokens: 12800, train.ckpt_every_tokens: 100000, train.eval_every_tokens: 0}',
    'axes:',
    '  seed: [0, 1, 2]',
    '',
  ].join('\n'));
  const sweepDir = path.join(dir, 'sweep');
  const child = spawn(process.execPath, [BIN, 'sweep', 'run', file, '--jobs', '2', '--sweep-dir', sweepDir], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => void (stderr += d.toString()));
  const runDir = (id: string) => path.join(sweepDir, 'runs', id);
  const deadline = Date.now() + 90000;
  while ((metricsStep(runDir('s0')) < 5 || metricsStep(runDir('s1')) < 5) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  expect(metricsStep(runDir('s1'))).toBeGreaterThanOrEqual(5);
  // What a terminal's Ctrl-C does: the sweep process alone gets it (its runs are in process groups of their own).
  child.kill('SIGINT');
  const code = await new Promise<number | null>((r) => child.on('close', r));
  expect(code).toBe(130);
  expect(stderr).toMatch(/SIGINT: the running runs stop after their current step with a checkpoint; no new run starts/);

  for (const id of ['s0', 's1']) {
    const s = summaryOf(runDir(id));
    expect(s.status).toBe('interrupted');
    expect(s.step).toBeGreaterThanOrEqual(5);
    expect(s.step).toBeLessThan(100);
    expect(fs.existsSync(path.join(runDir(id), 'ckpt', `step-${s.step}`, 'state.json'))).toBe(true);
    expect(JSON.parse(fs.readFileSync(path.join(sweepDir, 'exits', `${id}.json`), 'utf8')).exit_code).toBe(130);
  }
  expect(fs.existsSync(runDir('s2'))).toBe(false);
  const sweep: SweepFile = JSON.parse(fs.readFileSync(path.join(sweepDir, 'sweep.json'), 'utf8'));
  expect(sweep).toMatchObject({ format: 'mlactl-sweep/1', executor: 'local', runs: [{ id: 's0', dir: 'runs/s0', overrides: { seed: 0 } }, { id: 's1' }, { id: 's2' }] });
  expect(fs.existsSync(path.join(sweepDir, 'sweep.lock'))).toBe(false);

  const status = spawnSync(process.execPath, [BIN, 'sweep', 'status', sweepDir, '--json'], { cwd: ROOT, encoding: 'utf8' });
  expect(status.status).toBe(0);
  const before: SweepStatus = JSON.parse(status.stdout);
  expect(before.runs.map((r) => r.state)).toEqual(['interrupted', 'interrupted', 'missing']);
  const stoppedAt = { s0: summaryOf(runDir('s0')).step, s1: summaryOf(runDir('s1')).step };

  // Resume: s0 and s1 from their checkpoints, s2 (never started) from the beginning.
  const resumed = spawnSync(process.execPath, [BIN, 'sweep', 'resume', sweepDir, '--jobs', '2', '--json'], { cwd: ROOT, encoding: 'utf8' });
  expect(resumed.status).toBe(0);
  const outcome: SweepOutcome = JSON.parse(resumed.stdout);
  expect(outcome.runs).toEqual(['s0', 's1', 's2']);
  expect(outcome.status!.runs.map((r) => r.state)).toEqual(['completed', 'completed', 'completed']);
  for (const id of ['s0', 's1'] as const) {
    expect(fs.readFileSync(path.join(sweepDir, 'logs', `${id}.log`), 'utf8')).toContain(`resuming ${runDir(id)} from ckpt/step-${stoppedAt[id]} (step ${stoppedAt[id]})`);
    expect(JSON.parse(fs.readFileSync(path.join(runDir(id), 'manifest.json'), 'utf8')).resumed_at).toHaveLength(1);
  }
  expect(fs.readFileSync(path.join(sweepDir, 'logs', 's2.log'), 'utf8')).not.toContain('resuming');

  // Nothing left: a second resume starts nothing and touches no run.
  const mtimes = ['s0', 's1', 's2'].map((id) => fs.statSync(path.join(runDir(id), 'summary.json')).mtimeMs);
  const again = spawnSync(process.execPath, [BIN, 'sweep', 'resume', sweepDir], { cwd: ROOT, encoding: 'utf8' });
  expect(again.status).toBe(0);
  expect(again.stderr).toMatch(/nothing to resume: 3 completed/);
  expect(['s0', 's1', 's2'].map((id) => fs.statSync(path.join(runDir(id), 'summary.json')).mtimeMs)).toEqual(mtimes);
  fs.rmSync(dir, { recursive: true, force: true });
}, 300000);
