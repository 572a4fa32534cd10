// Sweep files and what is derived from them without training: expansion, run ids, --set values, cost, the batch
// script, run states; and the one-line refusals of bad sweeps, in process and through the built CLI.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parse as parseYaml } from 'yaml';
import { loadConfig } from '../../src/config/load';
import { flopsPerToken } from '../../src/inference/info';
import { configSpec } from '../../src/model/spec';
import { estimatePlan, runCost, sweepCost } from '../../src/sweep/cost';
import { sweepFileOf } from '../../src/sweep/folder';
import { axisValues, loadSweep, setArg } from '../../src/sweep/plan';
import { arraySpec, batchScript, gresGpus } from '../../src/sweep/slurm';
import { runState, type StateInputs } from '../../src/sweep/status';
import { userErrorOf } from '../user-error';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'run.js');
const TINY_SWEEP = path.join(ROOT, 'configs/sweeps/tiny.yaml');

function sweepFile(body: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-sweep-plan-'));
  const file = path.join(dir, 'sweep.yaml');
  fs.writeFileSync(file, `base: ${path.join(ROOT, 'configs/models/tiny.yaml')}\n${body}`);
  return file;
}

test('the tiny sweep expands to 3 variants x 3 lrs x 2 seeds, first axis outermost, each config resolved with its overrides', () => {
  const plan = loadSweep(TINY_SWEEP);
  expect(plan.runs).toHaveLength(18);
  expect(plan.runs.slice(0, 3).map((r) => r.id)).toEqual(['baseline_lr1e-3_s0', 'baseline_lr1e-3_s1', 'baseline_lr3e-3_s0']);
  expect(plan.runs[17].id).toBe('qk-norm_lr1e-2_s1');
  expect(new Set(plan.runs.map((r) => r.id)).size).toBe(18);
  for (const r of plan.runs) {
    expect(r.dir).toBe(`runs/${r.id}`);
    expect(r.config.model.variant).toBe(r.overrides['model.variant']);
    expect(r.config.train.lr).toBe(r.overrides['train.lr']);
    expect(r.config.seed).toBe(r.overrides.seed);
    // set: applies to every run; the name is the sweep's.
    expect(r.config.train.tokens).toBe(4096);
    expect(r.config.backend).toBe('wasm');
    expect(r.config.name).toBe('tiny-sweep');
  }
  expect(plan.baseConfig.train.tokens).toBe(4096);
  // The base config and one run's --set overrides reproduce the run's config exactly (what each child trains).
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-sweep-base-'));
  const base = path.join(dir, 'base.resolved.yaml');
  fs.writeFileSync(base, require('../../src/config/load').configToYaml(plan.baseConfig));
  const run = plan.runs[13];
  const sets = Object.entries(run.overrides).map(([k, v]) => setArg(k, v));
  expect(loadConfig(base, sets)).toEqual(run.config);
});

test('a log range gives num values from..to evenly spaced in log space, rounded to 3 significant digits', () => {
  const fail = (d: string): never => {
    throw new Error(d);
  };
  expect(axisValues({ log: [1e-4, 1e-2], num: 5 }, fail)).toEqual([1e-4, 3.16e-4, 1e-3, 3.16e-3, 1e-2]);
  expect(axisValues({ log: [1e-3, 1e-3], num: 1 }, fail)).toEqual([1e-3]);
  const plan = loadSweep(sweepFile('axes:\n  train.lr: {log: [1e-3, 1e-1], num: 3}\n'));
  expect(plan.runs.map((r) => [r.id, r.config.train.lr])).toEqual([['lr1e-3', 0.001], ['lr1e-2', 0.01], ['lr1e-1', 0.1]]);
});

test('--set values read back as the same value: strings that look like numbers or booleans are quoted', () => {
  for (const v of ['qk-norm', 'true', '1e-3', 'a b', 0.003, 3.16e-4, 4096, true, false]) {
    const arg = setArg('k', v);
    expect(parseYaml(arg.slice(2))).toEqual(v);
  }
  expect(setArg('model.variant', 'qk-norm')).toBe('model.variant=qk-norm');
  expect(setArg('train.lr', 0.003)).toBe('train.lr=0.003');
});

test('run ids for any key path: the last part names the axis, whole paths when two would clash', () => {
  const plan = loadSweep(sweepFile('axes:\n  data.seed: [1, 2]\n  model.qk_norm.key_groups: [1, 4]\n  train.qk_clip.tau: [15, 30.5]\n'));
  expect(plan.runs.map((r) => r.id)).toContain('seed1_key_groups4_tau3.05e1');
  const clash = loadSweep(sweepFile('axes:\n  seed: [0, 1]\n  data.seed: [5]\n  model.tie_embeddings: [true, false]\n'));
  expect(clash.runs.map((r) => r.id)).toEqual(['s0_seed5_tie_embeddingstrue', 's0_seed5_tie_embeddingsfalse', 's1_seed5_tie_embeddingstrue', 's1_seed5_tie_embeddingsfalse']);
});

test('bad sweeps: one line naming the key and the sweep file line, exit code 2', () => {
  expect(userErrorOf(() => loadSweep(sweepFile('axes:\n  model.varient: [baseline]\n')))).toMatch(/^sweep error at axes\.model\.varient: unknown config key \(did you mean model\.variant\?\) \[.*sweep\.yaml:3\]$/);
  expect(userErrorOf(() => loadSweep(sweepFile('axes:\n  train.lr: []\n')))).toMatch(/^sweep error at axes\.train\.lr: empty axis/);
  expect(userErrorOf(() => loadSweep(sweepFile('axes:\n  train.lr: 1e-3\n')))).toMatch(/axes\.train\.lr: expected a list .* \(a single value belongs under set:\)/);
  expect(userErrorOf(() => loadSweep(sweepFile('axes:\n  seed: [0, 0]\n')))).toMatch(/axes\.seed: the value 0 appears twice/);
  expect(userErrorOf(() => loadSweep(sweepFile('axes:\n  train: [1]\n')))).toMatch(/axes\.train: a section, not a value/);
  expect(userErrorOf(() => loadSweep(sweepFile('axes:\n  experiment.seeds: [0]\n')))).toMatch(/axes\.experiment\.seeds: a sweep trains single runs/);
  expect(userErrorOf(() => loadSweep(sweepFile('axes: {}\n')))).toMatch(/^sweep error at axes: expected a mapping/);
  expect(userErrorOf(() => loadSweep(sweepFile('axis:\n  seed: [0]\n')))).toMatch(/^sweep error at axis: unknown key \(did you mean axes\?\)/);
  expect(userErrorOf(() => loadSweep(sweepFile('axes:\n  seed: [0]\nslurm:\n  partion: gpu\n')))).toMatch(/slurm\.partion: unknown Slurm option \(did you mean slurm\.partition\?\)/);
  expect(userErrorOf(() => loadSweep(sweepFile('axes:\n  seed: [0]\nslurm:\n  partition: "gpu; rm -rf /"\n')))).toMatch(/slurm\.partition: expected a value without spaces or shell characters/);
  expect(userErrorOf(() => loadSweep(sweepFile('set:\n  experiment.variants: [baseline, qk-norm]\naxes:\n  seed: [0]\n')))).toMatch(/set\.experiment\.variants: a sweep trains single runs/);
  // A value the config refuses is reported at the key, pointing at the sweep file's line.
  expect(userErrorOf(() => loadSweep(sweepFile('axes:\n  model.variant: [baseline, qk-nrom]\n')))).toMatch(/^config error at model\.variant: .*did you mean qk-norm\?\) \[.*sweep\.yaml:3\]$/);
  expect(userErrorOf(() => loadSweep(sweepFile('set:\n  train.warmup_tokens: 0\naxes:\n  train.tokens: [4096, 10]\n')))).toMatch(/^config error at train\.tokens: 10 is less than one optimizer step .*sweep\.yaml:5\]$/);
  expect(userErrorOf(() => loadSweep(path.join(os.tmpdir(), 'no-such-sweep.yaml')))).toMatch(/no-such-sweep\.yaml: no such file/);
});

test('cost: FLOPs are training (3 x forward) per token plus forward passes at each evaluation; hours only from a measurement', () => {
  const plan = loadSweep(TINY_SWEEP);
  const cfg = plan.runs[0].config;
  const f = flopsPerToken(configSpec(cfg), cfg.data.seq_len);
  const c = runCost(cfg);
  expect(c.steps).toBe(32);
  expect(c.tokens).toBe(4096);
  expect(c.train_flops).toBe(4096 * f.training);
  // eval_every_tokens 2048 = every 16 steps: evaluations at 16 and 32.
  expect(c.eval_flops).toBe(2 * cfg.train.eval_tokens * f.forward);
  const e = estimatePlan(plan, 2);
  expect(e.count).toBe(18);
  expect(e.cost.flops).toBeCloseTo(18 * c.flops, 0);
  expect(e.cost.hours).toBeGreaterThan(0);
  expect(e.cost.wall_hours).toBeCloseTo(e.cost.hours! / 2, 12);
  expect(e.cost.basis).toMatch(/^tfjs wasm at .* tokens\/s on the tiny preset/);

  // Where the engine or device is decided only where the run trains, or nothing was measured: no hours, and why.
  const auto = plan.runs.map((r) => ({ ...r.config, backend: 'auto' as const }));
  expect(sweepCost(auto, auto.map(runCost), { jobs: 1, gpusRequested: false })).toMatchObject({ hours: null, basis: expect.stringMatching(/no hours: backend is auto/) });
  const tf = plan.runs.map((r) => ({ ...r.config, backend: 'tensorflow' as const }));
  expect(sweepCost(tf, tf.map(runCost), { jobs: 1, gpusRequested: false })).toMatchObject({ hours: null, basis: expect.stringMatching(/no measured throughput for tfjs on tensorflow/) });
  const torchAuto = plan.runs.map((r) => ({ ...r.config, engine: { ...r.config.engine, name: 'torch' as const } }));
  expect(sweepCost(torchAuto, torchAuto.map(runCost), { jobs: 1, gpusRequested: false }).hours).toBeNull();
  // Of the CUDA measurements, the one nearest in FLOPs per token (gpu-small, not paper-400m) is carried over.
  expect(sweepCost(torchAuto, torchAuto.map(runCost), { jobs: 1, gpusRequested: true }).basis).toMatch(/^torch cuda at .* on the gpu-small preset .*carried over to these runs/);
});

test('array specs compress indices into ranges and carry the throttle; GPUs are counted from --gres', () => {
  expect(arraySpec([0, 1, 2, 3, 4, 5], 2)).toBe('0-5%2');
  expect(arraySpec([7, 3, 4, 9], null)).toBe('3-4,7,9');
  expect(arraySpec([5], 1)).toBe('5%1');
  expect(gresGpus('gpu:4')).toBe(4);
  expect(gresGpus('gpu:h100:8')).toBe(8);
  expect(gresGpus('gpu')).toBe(1);
  expect(gresGpus('gpu:a100')).toBe(1);
  expect(gresGpus(null)).toBe(0);
  expect(gresGpus('shard:2')).toBe(0);
});

test('the batch script: the sweep file\'s Slurm options, one case per run, train --resume for a folder already begun', () => {
  const plan = loadSweep(sweepFile(
    'axes:\n  model.variant: [baseline, qk-norm]\nslurm:\n  partition: gpu\n  account: proj\n  time: "02:00:00"\n  gres: gpu:1\n  signal_before_s: 240\n  setup: ["module load nodejs/20"]\n  sbatch: ["--constraint=h100"]\n',
  ));
  const sweep = sweepFileOf(plan, 'slurm', plan.spec.slurm);
  const script = batchScript(sweep, '/scratch/sw', { node: '/opt/node/bin/node', cli: '/opt/mlactl/bin/run.js' });
  for (const line of ['#SBATCH --partition=gpu', '#SBATCH --account=proj', '#SBATCH --time=02:00:00', '#SBATCH --gres=gpu:1', '#SBATCH --signal=B:USR1@240', '#SBATCH --requeue', '#SBATCH --constraint=h100', '#SBATCH --output=/scratch/sw/slurm/logs/%A_%a.out', 'module load nodejs/20']) {
    expect(script.split('\n')).toContain(line);
  }
  expect(script).toContain('  0) RUN=baseline; SETS=(--set model.variant=baseline) ;;');
  expect(script).toContain('  1) RUN=qk-norm; SETS=(--set model.variant=qk-norm) ;;');
  expect(script).toContain('NODE=/opt/node/bin/node');
  expect(script).toContain('scontrol requeue "$TASK"');
  // bash parses it.
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-sbatch-')), 'x.sbatch');
  fs.writeFileSync(file, script);
  expect(spawnSync('bash', ['-n', file]).status).toBe(0);
  // requeue: false leaves the requeue out; the signal then only stops the run (sweep resume continues it).
  const noRequeue = batchScript({ ...sweep, slurm: { ...sweep.slurm!, requeue: false, signal_before_s: 0 } }, '/scratch/sw');
  expect(noRequeue).toContain('#SBATCH --no-requeue');
  expect(noRequeue).not.toContain('--signal=');
  expect(noRequeue).not.toContain('scontrol requeue');
});

test('run states: the scheduler first, then the summary, the exit code and whether the folder was begun', () => {
  const none: StateInputs = { summary: null, started: false, exit: null, lockAlive: false, executorAlive: false, queue: null };
  const summary = (status: 'completed' | 'diverged' | 'interrupted' | 'running', step = 32) => ({ status, step, total_steps: 32 });
  expect(runState(none)).toBe('missing');
  expect(runState({ ...none, executorAlive: true })).toBe('queued');
  expect(runState({ ...none, queue: 'PENDING' })).toBe('queued');
  expect(runState({ ...none, queue: 'RUNNING', started: true })).toBe('running');
  expect(runState({ ...none, started: true, lockAlive: true, summary: summary('running', 8) })).toBe('running');
  expect(runState({ ...none, started: true, summary: summary('completed'), exit: { exit_code: 0 }, queue: 'COMPLETED' })).toBe('completed');
  expect(runState({ ...none, started: true, summary: summary('diverged', 9), exit: { exit_code: 3 } })).toBe('diverged');
  expect(runState({ ...none, started: true, summary: summary('interrupted', 12), exit: { exit_code: 143 }, queue: 'CANCELLED' })).toBe('cancelled');
  expect(runState({ ...none, queue: 'CANCELLED' })).toBe('cancelled');
  expect(runState({ ...none, started: true, summary: summary('interrupted', 12), exit: { exit_code: 130 } })).toBe('interrupted');
  // Killed (SIGKILL): the summary of the last checkpoint still says running, nobody holds the lock.
  expect(runState({ ...none, started: true, summary: summary('running', 8), exit: { exit_code: 137 }, queue: 'FAILED' })).toBe('failed');
  expect(runState({ ...none, started: true, summary: summary('running', 8) })).toBe('failed');
  expect(runState({ ...none, exit: { exit_code: 2 } })).toBe('failed');
});

describe('the built CLI', () => {
  beforeAll(() => {
    if (!fs.existsSync(path.join(ROOT, 'dist/commands/sweep/plan.js'))) throw new Error('dist/commands/sweep/plan.js is missing: build first with `npm run build`');
  });

  test('sweep plan prints the runs and the cost; --json returns the same as a typed result', () => {
    const text = spawnSync(process.execPath, [BIN, 'sweep', 'plan', TINY_SWEEP, '--jobs', '2'], { encoding: 'utf8', cwd: ROOT });
    expect(text.status).toBe(0);
    expect(text.stdout).toMatch(/^sweep tiny-sweep: 18 runs \(model\.variant x3, train\.lr x3, seed x2\)/);
    expect(text.stdout).toContain('qk-norm_lr3e-3_s1');
    expect(text.stdout).toMatch(/\ncost: 18 runs, 73\.7k training tokens, [\d.]+ GFLOP/);
    const json = spawnSync(process.execPath, [BIN, 'sweep', 'plan', TINY_SWEEP, '--json'], { encoding: 'utf8', cwd: ROOT });
    expect(json.status).toBe(0);
    const result = JSON.parse(json.stdout);
    expect(result.count).toBe(18);
    expect(result.runs[5]).toMatchObject({ id: 'baseline_lr1e-2_s1', overrides: { 'model.variant': 'baseline', 'train.lr': 0.01, seed: 1 }, steps: 32, tokens: 4096 });
    expect(result.cost.hours).toBeGreaterThan(0);
  });

  test('sweep run refuses a bad sweep in one line with exit 2 and writes nothing', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-sweep-bad-'));
    for (const [body, pattern] of [
      ['axes:\n  model.varient: [baseline, qk-norm]\n', /axes\.model\.varient: unknown config key \(did you mean model\.variant\?\)/],
      ['axes:\n  seed: []\n', /axes\.seed: empty axis/],
    ] as const) {
      const r = spawnSync(process.execPath, [BIN, 'sweep', 'run', sweepFile(body), '--out', out], { encoding: 'utf8', cwd: ROOT });
      const lines = r.stderr.split('\n').filter((l) => l.trim());
      expect({ code: r.status, lines: lines.length }).toEqual({ code: 2, lines: 1 });
      expect(lines[0]).toMatch(pattern);
    }
    expect(fs.readdirSync(out)).toEqual([]);
  });

  test('sweep run refuses an existing folder, and --force deletes only a sweep folder', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-sweep-force-'));
    fs.writeFileSync(path.join(dir, 'notes.txt'), 'mine');
    const file = sweepFile('axes:\n  seed: [0]\n');
    const plain = spawnSync(process.execPath, [BIN, 'sweep', 'run', file, '--sweep-dir', dir], { encoding: 'utf8', cwd: ROOT });
    expect(plain.status).toBe(2);
    expect(plain.stderr.trim()).toBe(`mlactl: ${dir}: sweep folder exists; \`mlactl sweep resume ${dir}\` continues it, --force starts over`);
    const forced = spawnSync(process.execPath, [BIN, 'sweep', 'run', file, '--sweep-dir', dir, '--force'], { encoding: 'utf8', cwd: ROOT });
    expect(forced.status).toBe(2);
    expect(forced.stderr.trim()).toBe(`mlactl: ${dir}: --force refuses to delete it: it holds no sweep.json, so it is not a sweep folder`);
    expect(fs.readFileSync(path.join(dir, 'notes.txt'), 'utf8')).toBe('mine');
  });
});
