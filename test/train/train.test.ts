import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/backend';
import { loadConfig } from '../../src/config/load';
import { memoryTokenStore } from '../../src/data/batches';
import { modelSpec } from '../../src/model/spec';
import { runExperiment } from '../../src/train/experiment';
import { readMetrics } from '../../src/runfolder/metrics';
import { trainRun } from '../../src/train/run';
import { Trainer } from '../../src/engine/tfjs/trainer';
import { randomTokens } from '../helpers';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'run.js');
const TINY = path.join(ROOT, 'configs/models/tiny.yaml');
const DEMO = path.join(ROOT, 'configs/models/demo.yaml');

function tmp(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-train-'));
}

beforeAll(async () => {
  await initBackend('wasm');
});

test('no tensor leaks: the tensor count is constant over training steps after a warm-up step', async () => {
  for (const variant of ['baseline', 'qk-clip', 'qk-norm']) {
    const cfg = loadConfig(TINY, [`model.variant=${variant}`, 'train.grad_accum=2', 'train.z_loss=1e-4', 'train.qk_clip.tau=0.01', 'train.optimizer=muon']);
    const spec = modelSpec(cfg.model, 320);
    const trainer = new Trainer(cfg, spec, memoryTokenStore(randomTokens(4000, 258, 3)));
    await trainer.runStep();
    const warm = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) await trainer.runStep();
    expect(tf.memory().numTensors).toBe(warm);
    await trainer.evaluate(memoryTokenStore(randomTokens(400, 258, 4)), [0, 33, 66]);
    expect(tf.memory().numTensors).toBe(warm);
    trainer.dispose();
  }
});

describe('the three variants on the Brown corpus with the demo preset, at a learning rate where logits grow', () => {
  // lr 1e-2 with AdamW: the baseline's maximum attention logit grows from 0.2 to about 80 within 40 steps of
  // 4 x 128 tokens (bench/NOTES.md), so tau = 15 is crossed after about a dozen steps.
  const TAU = 15;
  const dir = tmp();
  const runs: Record<string, { rows: ReturnType<typeof readMetrics>; summary: Awaited<ReturnType<typeof trainRun>>['summary'] }> = {};

  beforeAll(async () => {
    const sets = ['train.lr=1e-2', 'train.batch_size=4', 'train.tokens=20480', 'train.warmup_tokens=2048', 'train.eval_every_tokens=0', 'train.eval_tokens=4096', `train.qk_clip.tau=${TAU}`];
    for (const variant of ['baseline', 'qk-clip', 'qk-norm']) {
      const r = await trainRun({ config: loadConfig(DEMO, [...sets, `model.variant=${variant}`]), runDir: path.join(dir, variant) });
      runs[variant] = { rows: readMetrics(r.runDir), summary: r.summary };
    }
  }, 900000);

  test.each(['baseline', 'qk-clip', 'qk-norm'])('%s: the loss falls', (variant) => {
    const { rows, summary } = runs[variant];
    expect(rows).toHaveLength(40);
    const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
    const first = mean(rows.slice(0, 3).map((m) => m.train_loss));
    const last = mean(rows.slice(-5).map((m) => m.train_loss));
    // From ln(320) ~ 5.8 nats at initialisation; byte-level text gets well below 4 within a few dozen steps.
    expect(last).toBeLessThan(first - 1.5);
    expect(summary.final_val_loss).toBeLessThan(first - 1.5);
  });

  test('baseline: the maximum logit grows far past tau', () => {
    expect(Math.max(...runs.baseline.rows.map((r) => Math.max(...r.max_logit)))).toBeGreaterThan(3 * TAU);
  });

  test('qk-clip: heads are clipped and the maximum logit is held near tau afterwards', () => {
    const { rows, summary } = runs['qk-clip'];
    const firstClip = rows.findIndex((r) => r.heads_clipped > 0);
    expect(firstClip).toBeGreaterThan(0);
    expect(summary.heads_clipped_total).toBeGreaterThan(0);
    // Each step's logit is measured before that step's clip, so it may exceed tau by one optimizer step's growth.
    const after = rows.slice(firstClip).map((r) => Math.max(...r.max_logit));
    expect(Math.max(...after)).toBeLessThan(1.4 * TAU);
    const tail = after.slice(-10);
    expect(tail.reduce((a, b) => a + b, 0) / tail.length).toBeLessThan(1.2 * TAU);
  });
});

test('same data.seed: identical batch hashes across variants, and across --jobs 1 and --jobs 2', async () => {
  const dir = tmp();
  const sets = ['experiment.variants=[baseline,qk-norm]', 'train.tokens=512', 'train.warmup_tokens=128', 'train.eval_every_tokens=0', 'name=hashes'];
  const inProcess = await runExperiment({ config: loadConfig(TINY, sets), dir: path.join(dir, 'j1', 'hashes'), resume: false, force: false, jobs: 1 });
  expect(inProcess.arms.map((a) => a.status)).toEqual(['completed', 'completed']);
  const r = spawnSync(process.execPath, [BIN, 'train', '--config', TINY, ...sets.flatMap((s) => ['--set', s]), '--out', path.join(dir, 'j2'), '--jobs', '2', '--json'], { encoding: 'utf8' });
  expect(r.status).toBe(0);
  const hashes = (root: string, arm: string) => readMetrics(path.join(root, 'hashes', arm)).map((m) => m.batch_hash);
  const reference = hashes(path.join(dir, 'j1'), 'baseline');
  expect(reference).toHaveLength(4);
  expect(new Set(reference).size).toBe(4);
  expect(hashes(path.join(dir, 'j1'), 'qk-norm')).toEqual(reference);
  expect(hashes(path.join(dir, 'j2'), 'baseline')).toEqual(reference);
  expect(hashes(path.join(dir, 'j2'), 'qk-norm')).toEqual(reference);
  expect(JSON.parse(fs.readFileSync(path.join(dir, 'j2', 'hashes', 'experiment.json'), 'utf8')).arms.map((a: { name: string }) => a.name)).toEqual(['baseline', 'qk-norm']);
});

describe('bad input: one line on stderr, exit 2, no run folder left behind', () => {
  const dir = tmp();
  fs.writeFileSync(path.join(dir, 'empty.txt'), '\n  \n');
  fs.writeFileSync(path.join(dir, 'a-file'), 'x');
  const cases: [string, string[], RegExp][] = [
    ['missing data file', ['--set', `data.source=${path.join(dir, 'nope.txt')}`], /data\.source: .*nope\.txt/],
    ['empty corpus', ['--set', `data.source=${path.join(dir, 'empty.txt')}`], /data\.source: .*empty\.txt.*no text/],
    ['budget smaller than one step', ['--set', 'train.tokens=100', '--set', 'train.warmup_tokens=0'], /train\.tokens: .*less than one optimizer step/],
    ['unknown variant', ['--set', 'model.variant=qk-layernorm'], /model\.variant: expected one of baseline\|qk-clip\|qk-norm/],
    ['unknown optimizer', ['--set', 'train.optimizer=sgd'], /train\.optimizer: expected one of adamw\|muon/],
    ['unwritable run folder', ['--run-dir', path.join(dir, 'a-file', 'run')], /a-file\/run: run folder is not writable/],
  ];
  test.each(cases)('%s', (_name, extra, message) => {
    const out = path.join(dir, 'runs');
    const r = spawnSync(process.execPath, [BIN, 'train', '--config', TINY, '--out', out, ...extra], { encoding: 'utf8' });
    expect(r.status).toBe(2);
    const lines = r.stderr.trim().split('\n');
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(message);
    expect(fs.existsSync(out)).toBe(false);
  });
});

test('data prepare writes token shards that training reads without loading them whole', () => {
  const dir = tmp();
  const shards = path.join(dir, 'brown-byte');
  const p = spawnSync(process.execPath, [BIN, 'data', 'prepare', '--source', 'brown', '--tokenizer', 'byte', '--out', shards, '--json'], { encoding: 'utf8' });
  expect(p.status).toBe(0);
  const manifest = JSON.parse(p.stdout);
  expect(manifest).toMatchObject({ format: 'mlactl-shards', dtype: 'uint16', tokenizer: 'byte' });
  expect(manifest.total_tokens).toBeGreaterThan(5_000_000);
  const t = spawnSync(process.execPath, [BIN, 'train', '--config', TINY, '--set', `data.source=${shards}`, '--set', 'train.tokens=256', '--set', 'train.warmup_tokens=0', '--run-dir', path.join(dir, 'run'), '--json'], { encoding: 'utf8' });
  expect(t.status).toBe(0);
  expect(JSON.parse(t.stdout).summary).toMatchObject({ status: 'completed', step: 2 });
  expect(JSON.parse(fs.readFileSync(path.join(dir, 'run', 'manifest.json'), 'utf8'))).toMatchObject({ data_origin: 'shards', data_hash: manifest.source_hash });
});

test('divergence: a non-finite gradient stops the run as diverged, exit 3, metrics kept, no checkpoint from the bad state', () => {
  const dir = path.join(tmp(), 'div');
  const r = spawnSync(process.execPath, [BIN, 'train', '--config', TINY, '--set', 'train.lr=1e4', '--set', 'train.grad_clip=0', '--set', 'train.tokens=2048', '--set', 'train.warmup_tokens=0', '--run-dir', dir], { encoding: 'utf8' });
  expect(r.status).toBe(3);
  const summary = JSON.parse(fs.readFileSync(path.join(dir, 'summary.json'), 'utf8'));
  expect(summary.status).toBe('diverged');
  expect(summary.diverged_at_step).toBeGreaterThan(0);
  const rows = readMetrics(dir);
  expect(rows).toHaveLength(summary.diverged_at_step);
  expect(Number.isFinite(rows[rows.length - 1].grad_norm) && Number.isFinite(rows[rows.length - 1].train_loss)).toBe(false);
  // Only the untrained step-0 checkpoint exists: nothing was saved from the diverged state.
  expect(fs.readdirSync(path.join(dir, 'ckpt'))).toEqual(['step-0']);
});
