// The two engines against each other on the CPU (issue #12's parity acceptance): the tfjs engine writes a step-0
// checkpoint; the torch engine, in fp32, resumes from it on the same batches. Needs Debian's python3-torch (or any
// interpreter with PyTorch, MLACTL_PYTHON); without one these tests fail with the reason, they never pass silently.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { initBackend } from '../../src/backend';
import { loadConfig } from '../../src/config/load';
import { findTorch, PYTHON_PACKAGE_DIR } from '../../src/engine/torch';
import { loadRunModel, TfScoringModel } from '../../src/inference/scoring';
import { readMetrics } from '../../src/runfolder/metrics';
import type { MetricsRow } from '../../src/runfolder/types';
import { trainRun } from '../../src/train/run';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'run.js');
const TINY = path.join(ROOT, 'configs/models/tiny.yaml');
const STEPS = 20;
// lr 3e-2: the tiny model's logits cross tau within a few steps, so heads are clipped (AdamW: about 0.9 by step 6,
// tau 0.5; Muon grows them slower: 0.04 to 0.11 over 20 steps, tau 0.08).
const TAU: Record<string, number> = { adamw: 0.5, muon: 0.08 };
const BASE = ['backend=cpu', 'train.lr=3e-2', `train.tokens=${STEPS * 128}`, 'train.warmup_tokens=256', 'train.eval_every_tokens=1280', 'engine.threads=1'];

const found = findTorch({ engine: { name: 'torch', python: '', gpus: 1, precision: 'fp32', compile: 'off', threads: 1, device: 'cpu' } });
const python = 'probe' in found ? found.probe.python : '';
test('an interpreter with PyTorch is found for the torch engine tests', () => {
  // Fails, naming each interpreter tried and why, where PyTorch is missing (scripts/test-deps.sh installs it).
  expect('reasons' in found ? found.reasons : []).toEqual([]);
});

const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-engines-'));

/** A copy of `from` cut back to its step-0 checkpoint: what `--resume` continues from. */
function stepZeroCopy(from: string, to: string): void {
  fs.mkdirSync(path.join(to, 'ckpt'), { recursive: true });
  fs.cpSync(path.join(from, 'ckpt', 'step-0'), path.join(to, 'ckpt', 'step-0'), { recursive: true });
  for (const f of ['config.resolved.yaml', 'manifest.json']) fs.copyFileSync(path.join(from, f), path.join(to, f));
}

const rel = (a: number, b: number) => Math.abs(a - b) / Math.max(Math.abs(b), 1e-12);
const clippedHeads = (dir: string, tau: number) =>
  fs.readFileSync(path.join(dir, 'maxlogits.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(',')).filter((c) => Number(c[4]) > tau).map((c) => `${c[0]}:${c[2]}:${c[3]}`);

describe.each([
  ['baseline', 'adamw'], ['qk-clip', 'adamw'], ['qk-norm', 'adamw'],
  ['baseline', 'muon'], ['qk-clip', 'muon'], ['qk-norm', 'muon'],
])('%s with %s: torch resumed from the tfjs step-0 checkpoint tracks the tfjs run', (variant, optimizer) => {
  let tfjs: MetricsRow[] = [];
  let torch: MetricsRow[] = [];
  const dir = tmp();
  beforeAll(async () => {
    if (!python) return;
    await initBackend('cpu');
    const sets = [...BASE, `train.qk_clip.tau=${TAU[optimizer]}`, `model.variant=${variant}`, `train.optimizer=${optimizer}`];
    const a = await trainRun({ config: loadConfig(TINY, [...sets, 'engine.name=tfjs']), runDir: path.join(dir, 'tfjs') });
    expect(a.summary.status).toBe('completed');
    stepZeroCopy(path.join(dir, 'tfjs'), path.join(dir, 'torch'));
    const b = spawnSync(process.execPath, [BIN, 'train', '--config', TINY, ...sets.flatMap((s) => ['--set', s]), '--engine', 'torch', '--run-dir', path.join(dir, 'torch'), '--resume'], {
      encoding: 'utf8', env: { ...process.env, MLACTL_PYTHON: python },
    });
    expect(b.stderr).toMatch(/resuming .* from ckpt\/step-0/);
    expect(b.status).toBe(0);
    tfjs = readMetrics(path.join(dir, 'tfjs'));
    torch = readMetrics(path.join(dir, 'torch'));
  }, 300000);
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  test('the same batches, the same loss at step 1 (1e-5), every loss within 1e-3 over 20 steps, the same lr', () => {
    expect(torch).toHaveLength(STEPS);
    expect(torch.map((r) => r.batch_hash)).toEqual(tfjs.map((r) => r.batch_hash));
    expect(rel(torch[0].train_loss!, tfjs[0].train_loss!)).toBeLessThanOrEqual(1e-5);
    for (let i = 0; i < STEPS; i++) {
      expect(rel(torch[i].train_loss!, tfjs[i].train_loss!)).toBeLessThanOrEqual(1e-3);
      expect(rel(torch[i].lr!, tfjs[i].lr!)).toBeLessThanOrEqual(1e-12);
    }
    // Not vacuous: training moved the loss.
    expect(tfjs[STEPS - 1].train_loss!).toBeLessThan(tfjs[0].train_loss! - 0.1);
    const vals = (rows: MetricsRow[]) => rows.filter((r) => r.val_loss !== null).map((r) => r.val_loss!);
    expect(vals(torch)).toHaveLength(vals(tfjs).length);
    vals(torch).forEach((v, i) => expect(rel(v, vals(tfjs)[i])).toBeLessThanOrEqual(1e-3));
  });

  if (variant === 'qk-clip') {
    test('the same heads clipped at the same steps', () => {
      expect(tfjs.reduce((n, r) => n + r.heads_clipped, 0)).toBeGreaterThan(0);
      expect(torch.map((r) => r.heads_clipped)).toEqual(tfjs.map((r) => r.heads_clipped));
      expect(clippedHeads(path.join(dir, 'torch'), TAU[optimizer])).toEqual(clippedHeads(path.join(dir, 'tfjs'), TAU[optimizer]));
    });
  }

  test("the torch engine's final checkpoint, scored by the tfjs engine, gives the torch engine's own log-probs (1e-4)", async () => {
    const ckpt = path.join(dir, 'torch', 'ckpt', `step-${STEPS}`);
    const tokens = [256, ...Array.from(Buffer.from('The jury said it was fair.'))];
    const model = loadRunModel(ckpt);
    let tf: number[];
    try {
      const [s] = await new TfScoringModel(model).scoreSequences([tokens]);
      tf = Array.from(s.logprobs);
    } finally {
      model.dispose();
    }
    const script = [
      'import json, sys, torch',
      'from mlactl_torch.checkpoint import read_config, spec_from_checkpoint_config, load_model_weights',
      'from mlactl_torch.model import MLAForCausalLM',
      'folder, tokens = sys.argv[1], json.loads(sys.argv[2])',
      'm = MLAForCausalLM(spec_from_checkpoint_config(read_config(folder))); load_model_weights(folder, m); m.eval()',
      'with torch.no_grad():',
      '    lp = torch.log_softmax(m(torch.tensor([tokens])).logits.double(), -1)[0]',
      'print(json.dumps([lp[t, tokens[t + 1]].item() for t in range(len(tokens) - 1)]))',
    ].join('\n');
    const r = spawnSync(python, ['-c', script, ckpt, JSON.stringify(tokens)], { encoding: 'utf8', env: { ...process.env, PYTHONPATH: PYTHON_PACKAGE_DIR } });
    expect(r.stderr).toBe('');
    const own = JSON.parse(r.stdout) as number[];
    expect(own).toHaveLength(tf.length);
    own.forEach((v, i) => expect(Math.abs(v - tf[i])).toBeLessThanOrEqual(1e-4));
  });
});

describe('the torch engine through the CLI', () => {
  const dir = tmp();
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const run = (args: string[]) => spawnSync(process.execPath, [BIN, 'train', '--config', TINY, '--set', 'engine.threads=1', '--set', 'train.tokens=768', ...args], { encoding: 'utf8', env: { ...process.env, MLACTL_PYTHON: python } });

  test('resume: straight equals stop-and-resume, every logged value but timing', () => {
    expect(run(['--engine', 'torch', '--run-dir', path.join(dir, 'straight')]).status).toBe(0);
    expect(run(['--engine', 'torch', '--run-dir', path.join(dir, 'split'), '--stop-after-steps', '3']).status).toBe(0);
    expect(JSON.parse(fs.readFileSync(path.join(dir, 'split', 'summary.json'), 'utf8')).status).toBe('interrupted');
    expect(run(['--engine', 'torch', '--run-dir', path.join(dir, 'split'), '--resume']).status).toBe(0);
    const strip = (rows: MetricsRow[]) => rows.map(({ tokens_per_s: _a, elapsed_s: _b, ...rest }) => rest);
    const a = readMetrics(path.join(dir, 'straight'));
    expect(a).toHaveLength(6);
    expect(strip(readMetrics(path.join(dir, 'split')))).toEqual(strip(a));
    const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'straight', 'manifest.json'), 'utf8'));
    expect(manifest.engine).toMatchObject({ engine: 'torch', backend: 'cpu', world_size: 1, precision: 'fp32' });
  });

  test('steps without measured maxima keep every metrics.csv row at the header\'s width', () => {
    const runDir = path.join(dir, 'sparse');
    expect(run(['--engine', 'torch', '--run-dir', runDir, '--set', 'train.maxlogit_every_steps=4']).status).toBe(0);
    const rows = readMetrics(runDir);
    expect(rows.map((r) => r.max_logit.length)).toEqual([2, 0, 0, 2, 0, 2]); // step 1, every 4th, the last
    const lines = fs.readFileSync(path.join(runDir, 'metrics.csv'), 'utf8').trim().split('\n');
    expect(new Set(lines.map((l) => l.split(',').length)).size).toBe(1);
  });

  test('bad input: no usable PyTorch, more GPUs than the host has: one line, exit 2, nothing written', () => {
    const noTorch = spawnSync(process.execPath, [BIN, 'train', '--config', TINY, '--engine', 'torch', '--run-dir', path.join(dir, 'none')], {
      encoding: 'utf8', env: { ...process.env, MLACTL_PYTHON: path.join(dir, 'no-such-python') },
    });
    expect(noTorch.status).toBe(2);
    expect(noTorch.stderr.trim().split('\n')).toHaveLength(1);
    expect(noTorch.stderr).toMatch(/^mlactl: engine.name: torch needs an interpreter with PyTorch >= 1.13: .*no-such-python: not found/);
    const gpus = run(['--engine', 'torch', '--gpus', '4', '--run-dir', path.join(dir, 'gpus')]);
    expect(gpus.status).toBe(2);
    expect(gpus.stderr.trim()).toMatch(/^mlactl: engine.gpus: 4 processes asked for, but .* sees 0 CUDA device\(s\) on this host$/);
    expect(fs.existsSync(path.join(dir, 'none'))).toBe(false);
    expect(fs.existsSync(path.join(dir, 'gpus'))).toBe(false);
  });
});
