// paper-400m (393M parameters) must start on every engine: its step-0 checkpoint (model and Muon state, ~3.4 GB)
// is written and read back strictly by the tfjs engine's cpu backend and by the torch engine, and wasm, whose 4 GiB
// heap cannot hold it, refuses in one line before allocating. A window of 16 tokens keeps the activations small;
// the weights and optimizer state are the preset's. About a minute and 10 GB of memory per engine.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { findTorch } from '../../src/engine/torch';
import { readModelFolder } from '../../src/runfolder/checkpoint';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'run.js');
const PRESET = path.join(ROOT, 'configs/models/paper-400m.yaml');
const SMALL_WINDOW = ['--set', 'data.seq_len=16', '--set', 'train.batch_size=1', '--set', 'train.grad_accum=1', '--set', 'train.tokens=1600', '--set', 'train.warmup_tokens=16', '--set', 'train.eval_every_tokens=0', '--set', 'train.ckpt_every_tokens=0', '--set', 'train.eval_tokens=64', '--set', 'engine.threads=1'];
const found = findTorch({ engine: { name: 'torch', python: '', gpus: 1, precision: 'fp32', compile: 'off', threads: 1, device: 'cpu' } });
const env = { ...process.env, ...('probe' in found ? { MLACTL_PYTHON: found.probe.python } : {}) };

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-400m-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const train = (args: string[]) => spawnSync(process.execPath, [BIN, 'train', '--config', PRESET, ...SMALL_WINDOW, ...args], { encoding: 'utf8', env, timeout: 600_000 });

test.each([['tfjs', ['--engine', 'tfjs', '--backend', 'cpu']], ['torch', ['--engine', 'torch']]])(
  '%s: initialises paper-400m, writes its step-0 checkpoint and reads it back (model and optimizer)',
  (engine, flags) => {
    const runDir = path.join(dir, engine);
    const init = train([...flags, '--run-dir', runDir, '--stop-after-steps', '0']);
    expect(init.stderr).not.toMatch(/Error/);
    expect(init.status).toBe(0);
    const step0 = path.join(runDir, 'ckpt', 'step-0');
    const bytes = ['model.safetensors', 'optimizer.safetensors'].map((f) => fs.statSync(path.join(step0, f)).size);
    expect(bytes[0]).toBeGreaterThan(1.5e9); // 393M float32 weights
    expect(bytes[1]).toBeGreaterThan(1.5e9); // Muon momenta and AdamW moments
    const { spec } = readModelFolder(step0);
    expect([spec.L, spec.d, spec.H, spec.vocab]).toEqual([24, 1024, 16, 50304]);
    // The resume reads and checks every tensor of both files before it would train; stopping at 0 trains nothing.
    const reload = train([...flags, '--run-dir', runDir, '--resume', '--stop-after-steps', '0']);
    expect(reload.status).toBe(0);
    expect(reload.stderr).toMatch(/resuming .* from ckpt\/step-0 \(step 0\)/);
    expect(JSON.parse(fs.readFileSync(path.join(runDir, 'summary.json'), 'utf8'))).toMatchObject({ status: 'interrupted', step: 0 });
    fs.rmSync(runDir, { recursive: true, force: true });
  },
  600_000,
);

test('wasm: one line saying the heap cannot hold it, exit 2, nothing written', () => {
  const runDir = path.join(dir, 'wasm');
  const r = train(['--engine', 'tfjs', '--backend', 'wasm', '--run-dir', runDir]);
  expect(r.status).toBe(2);
  expect(r.stderr.trim().split('\n')).toHaveLength(1);
  expect(r.stderr).toMatch(/wasm heap .* cannot hold the weights, gradients and optimizer state of 393\.\d+M parameters/);
  expect(fs.existsSync(runDir)).toBe(false);
});
