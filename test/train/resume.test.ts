import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadConfig } from '../../src/config/load';
import { readMetrics } from '../../src/runfolder/metrics';
import type { MetricsRow } from '../../src/runfolder/types';
import { trainRun } from '../../src/train/run';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'run.js');

// 8 steps of 4 x 32 tokens; a checkpoint every 2 steps; clipping at a tau the tiny model exceeds from the start,
// so the resumed state includes rescaled weights and the optimizer moments.
const SETS = [
  'model.variant=qk-clip',
  'train.qk_clip.tau=0.02',
  'train.tokens=1024',
  'train.warmup_tokens=256',
  'train.ckpt_every_tokens=256',
  'train.eval_every_tokens=512',
];

/** Everything a resumed run must reproduce exactly; throughput and wall time legitimately differ. */
function deterministicPart(rows: MetricsRow[]) {
  return rows.map(({ tokens_per_s: _a, elapsed_s: _b, ...rest }) => rest);
}

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-resume-'));
}

// The cpu backend is about ten times slower than wasm here, so it runs half the steps.
describe.each([['wasm', 8], ['cpu', 4]] as const)('exact resume on %s', (backend, N) => {
  test(`${N} steps straight equals ${N / 2} steps, stop, resume to ${N}: every logged value bit-identical`, async () => {
    const cfg = loadConfig(path.join(ROOT, 'configs/models/tiny.yaml'), [...SETS, `backend=${backend}`, `train.tokens=${N * 128}`]);
    const dir = tmp();
    const straight = await trainRun({ config: cfg, runDir: path.join(dir, 'straight') });
    expect(straight.summary.status).toBe('completed');
    expect(straight.summary.heads_clipped_total).toBeGreaterThan(0);

    const half = await trainRun({ config: cfg, runDir: path.join(dir, 'split'), stopAfterSteps: N / 2 });
    expect(half.summary).toMatchObject({ status: 'interrupted', step: N / 2 });
    const resumed = await trainRun({ config: cfg, runDir: path.join(dir, 'split'), resume: true });
    expect(resumed.summary).toMatchObject({ status: 'completed', step: N });

    const a = readMetrics(path.join(dir, 'straight'));
    const b = readMetrics(path.join(dir, 'split'));
    expect(a).toHaveLength(N);
    expect(deterministicPart(b)).toEqual(deterministicPart(a));
    expect(a.some((r) => r.val_loss !== null)).toBe(true);
    // The check is not vacuous: losses move from step to step.
    expect(new Set(a.map((r) => r.train_loss)).size).toBe(N);
  });
});

test('SIGKILL while a checkpoint is being written: resume uses the last complete checkpoint and matches a straight run', async () => {
  const dir = tmp();
  const args = ['train', '--config', path.join(ROOT, 'configs/models/tiny.yaml'), ...SETS.flatMap((s) => ['--set', s]), '--set', 'backend=wasm'];
  const runDir = path.join(dir, 'killed');
  const child = spawn(process.execPath, [BIN, ...args, '--run-dir', runDir], {
    env: { ...process.env, MLACTL_TEST_CKPT_PAUSE_MS: '5000' },
    stdio: 'ignore',
  });
  // The first checkpoint (step 2) completes after its pause; kill during the second one (step 4).
  const partial = path.join(runDir, 'ckpt', '.step-4.partial');
  const deadline = Date.now() + 60000;
  while (!fs.existsSync(path.join(partial, 'model.safetensors')) && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50));
  expect(fs.existsSync(partial)).toBe(true);
  child.kill('SIGKILL');
  await new Promise((r) => child.on('close', r));
  expect(fs.existsSync(path.join(runDir, 'ckpt', 'step-2', 'state.json'))).toBe(true);
  expect(fs.existsSync(path.join(runDir, 'ckpt', 'step-4'))).toBe(false);

  const r = spawnSync(process.execPath, [BIN, ...args, '--run-dir', runDir, '--resume'], { encoding: 'utf8' });
  expect(r.status).toBe(0);
  expect(r.stderr).toMatch(/resuming .* from ckpt\/step-2 \(step 2\)/);
  expect(r.stdout).toMatch(/^completed: step 8\/8/);

  const straight = path.join(dir, 'straight');
  const s = spawnSync(process.execPath, [BIN, ...args, '--run-dir', straight, '--json'], { encoding: 'utf8' });
  expect(s.status).toBe(0);
  expect(deterministicPart(readMetrics(runDir))).toEqual(deterministicPart(readMetrics(straight)));
});
