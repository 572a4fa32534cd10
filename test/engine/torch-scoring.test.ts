// Evaluation through the torch engine's scorer (issue #13, CPU part): the same checkpoint and items scored by both
// engines give log-probs within 1e-4 (fp32) and the same result files.
import { spawn, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { findTorch, pythonEnv } from '../../src/engine/torch';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'run.js');
const TINY = path.join(ROOT, 'configs/models/tiny.yaml');
const found = findTorch({ engine: { name: 'torch', python: '', gpus: 1, precision: 'fp32', compile: 'off', threads: 1, device: 'cpu' } });
const env = { ...process.env, ...('probe' in found ? { MLACTL_PYTHON: found.probe.python } : {}) };
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-torch-eval-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test('eval --engine torch equals eval with tfjs: per-choice log-probs within 1e-4, the same results.json fields', () => {
  expect('reasons' in found ? found.reasons : []).toEqual([]);
  const run = path.join(dir, 'tfjs');
  const t = spawnSync(process.execPath, [BIN, 'train', '--config', TINY, '--set', 'backend=wasm', '--set', 'train.tokens=1024', '--run-dir', run], { encoding: 'utf8', env });
  expect(t.status).toBe(0);
  fs.cpSync(run, path.join(dir, 'torch'), { recursive: true });
  const evalWith = (folder: string, extra: string[]) =>
    spawnSync(process.execPath, [BIN, 'eval', '--run', path.join(dir, folder), '--task', 'brown-cloze', '--limit', '24', ...extra], { encoding: 'utf8', env });
  expect(evalWith('tfjs', ['--backend', 'wasm']).status).toBe(0);
  const e = evalWith('torch', ['--engine', 'torch']);
  expect(e.stderr).not.toMatch(/Error/);
  expect(e.status).toBe(0);
  for (const task of ['brown-cloze']) {
    const items = (folder: string) =>
      fs.readFileSync(path.join(dir, folder, 'eval', 'limit-24', `${task}.jsonl`), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { logprobs: number[] });
    const a = items('tfjs');
    const b = items('torch');
    expect(b).toHaveLength(24);
    a.forEach((item, i) => item.logprobs.forEach((lp, j) => expect(Math.abs(b[i].logprobs[j] - lp)).toBeLessThanOrEqual(1e-4)));
  }
  const results = (folder: string) => JSON.parse(fs.readFileSync(path.join(dir, folder, 'eval', 'limit-24', 'results.json'), 'utf8'));
  const shape = (r: Record<string, unknown>) => JSON.stringify(r, (k, v) => (typeof v === 'number' ? 0 : v));
  expect(shape(results('torch'))).toBe(shape(results('tfjs')));
});

test('a checkpoint the scoring process refuses gives one line naming the file, and no results', () => {
  const run = path.join(dir, 'refused');
  fs.cpSync(path.join(dir, 'tfjs'), run, { recursive: true });
  fs.rmSync(path.join(run, 'eval'), { recursive: true, force: true });
  const ckptRoot = path.join(run, 'ckpt');
  const weights = path.join(ckptRoot, fs.readdirSync(ckptRoot).sort().pop()!, 'model.safetensors');
  fs.truncateSync(weights, 100); // the header cut short: refused while the CLI tokenizes the items
  const e = spawnSync(process.execPath, [BIN, 'eval', '--run', run, '--task', 'brown-cloze', '--limit', '24', '--engine', 'torch'], { encoding: 'utf8', env });
  expect(e.status).not.toBe(0);
  expect(e.stderr).toBe(`mlactl: ${weights}: truncated safetensors header\n`);
  expect(fs.existsSync(path.join(run, 'eval'))).toBe(false);
}, 60000);

test('a Ctrl-C reaching the scoring process ends it quietly with 130, no traceback', async () => {
  expect('probe' in found).toBe(true);
  if (!('probe' in found)) return;
  const ckptRoot = path.join(dir, 'torch', 'ckpt');
  const ckpt = path.join(ckptRoot, fs.readdirSync(ckptRoot).sort().pop()!);
  const child = spawn(found.probe.python, ['-m', 'mlactl_torch', 'score', '--model', ckpt, '--device', 'cpu'], { env: pythonEnv() });
  let stdout = '';
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const ended = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  await new Promise<void>((resolve) =>
    child.stdout.on('data', (d: Buffer) => {
      stdout += d.toString();
      if (stdout.includes('"ready"')) resolve();
    }),
  );
  child.kill('SIGINT'); // waiting on stdin for a request, as between an evaluation's requests
  expect(await ended).toBe(130);
  expect(stderr).not.toMatch(/Traceback/);
}, 60000);
