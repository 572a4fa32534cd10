// Decoding through the torch engine (issue #13, parts 2-4, CPU side): generate, verify and score with --engine
// torch against the tfjs engine on the same checkpoint, the engine taken from the run config, and a bench decode
// smoke run. Runs the real CLI (built by `npm test`).
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import YAML from 'yaml';
import { findTorch } from '../../src/engine/torch';
import { DECODE_CSV_COLUMNS } from '../../src/bench/decode-report';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'run.js');
const TINY = path.join(ROOT, 'configs/models/tiny.yaml');
const found = findTorch({ engine: { name: 'torch', python: '', gpus: 1, precision: 'fp32', compile: 'off', threads: 1, device: 'cpu' } });
const env = { ...process.env, ...('probe' in found ? { MLACTL_PYTHON: found.probe.python } : {}) };
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-torch-decode-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env, timeout: 300_000 });
const json = (r: ReturnType<typeof cli>) => {
  expect(r.stderr).not.toMatch(/Error|mlactl:/);
  expect(r.status).toBe(0);
  return JSON.parse(r.stdout);
};

/** A tiny run trained a few steps on tfjs (wasm): trained weights, so greedy tokens are not all the same id. */
function trainTiny(name: string, variant: string): string {
  const run = path.join(dir, name);
  const t = cli('train', '--config', TINY, '--set', 'backend=wasm', '--set', 'train.tokens=1024', '--set', `model.variant=${variant}`, '--set', 'model.qk_norm.key_groups=2', '--run-dir', run);
  expect(t.status).toBe(0);
  return run;
}

test('the test machine has PyTorch', () => {
  expect('reasons' in found ? found.reasons : []).toEqual([]);
});

describe.each(['qk-norm', 'baseline'])('a trained %s checkpoint', (variant) => {
  let run: string;
  beforeAll(() => {
    run = trainTiny(variant, variant);
  }, 240_000);

  test('generate --engine torch gives the tfjs engine\'s greedy tokens, for every cache', () => {
    const caches = variant === 'qk-norm' ? ['latent+invrms', 'full-key'] : ['latent', 'full-key'];
    for (const cache of caches) {
      const tfjs = json(cli('generate', '--run', run, '--prompt', 'The jury said', '--temperature', '0', '--max-tokens', '24', '--cache', cache, '--backend', 'wasm', '--json'));
      const torch = json(cli('generate', '--run', run, '--prompt', 'The jury said', '--engine', 'torch', '--max-tokens', '24', '--cache', cache, '--json'));
      expect(torch.engine).toBe('torch');
      expect(torch.attention).toBe('torch'); // no CUDA here: the PyTorch step
      expect(torch.tokens).toEqual(tfjs.tokens);
      expect(torch.text).toBe(tfjs.text);
      expect(new Set(torch.tokens).size).toBeGreaterThan(1);
      expect(torch.cache_shapes).toEqual(tfjs.cache_shapes);
      expect(torch.prompt_tokens).toBe(tfjs.prompt_tokens);
    }
  }, 240_000);

  test('verify --engine torch passes every cache against training and float64', () => {
    const r = json(cli('verify', '--run', run, '--engine', 'torch', '--json'));
    expect(r.engine).toBe('torch');
    expect(r.reference.run).toBe(true);
    expect(r.comparisons.map((c: { pair: string }) => c.pair)).toEqual(
      variant === 'qk-norm'
        ? ['training vs reference', 'latent+invrms vs reference', 'full-key vs reference', 'latent+invrms vs training', 'full-key vs training']
        : ['training vs reference', 'latent vs reference', 'full-key vs reference', 'latent vs training', 'full-key vs training'],
    );
    for (const c of r.comparisons) expect(c.max_rel_error).toBeLessThanOrEqual(1e-5);
    expect(r.pass).toBe(true);
  }, 120_000);

  test('score --engine torch equals the tfjs engine within 1e-4 per token', () => {
    const text = 'The jury said it did find that many of the problems';
    const a = json(cli('score', '--run', run, '--text', text, '--backend', 'wasm', '--json'));
    const b = json(cli('score', '--run', run, '--text', text, '--engine', 'torch', '--json'));
    expect(b.engine).toBe('torch');
    expect(b.n_tokens).toBe(a.n_tokens);
    a.tokens.forEach((t: { logprob: number }, i: number) => expect(Math.abs(b.tokens[i].logprob - t.logprob)).toBeLessThanOrEqual(1e-4));
  }, 120_000);
});

test('verify --config --engine torch passes for every variant, scope and group count', () => {
  for (const set of [['model.variant=baseline'], ['model.variant=qk-clip', 'model.q_lora_rank=12'], ['model.variant=qk-norm', 'model.qk_norm.key_groups=1'], ['model.variant=qk-norm', 'model.qk_norm.scope=nope', 'model.qk_norm.key_groups=2']]) {
    const r = json(cli('verify', '--config', TINY, ...set.flatMap((s) => ['--set', s]), '--engine', 'torch', '--json'));
    expect(r.pass).toBe(true);
    expect(r.comparisons.length).toBe(5);
  }
}, 240_000);

test("without --engine, the run config's engine decides (torch, or auto with PyTorch here); tfjs stays the default", () => {
  const run = path.join(dir, 'qk-norm');
  const copy = path.join(dir, 'auto');
  fs.cpSync(run, copy, { recursive: true });
  const file = path.join(copy, 'config.resolved.yaml');
  const cfg = YAML.parse(fs.readFileSync(file, 'utf8'));
  expect(json(cli('generate', '--run', copy, '--prompt', 'It', '--max-tokens', '3', '--temperature', '0', '--json')).engine).toBe('tfjs');
  for (const name of ['torch', 'auto']) {
    fs.writeFileSync(file, YAML.stringify({ ...cfg, engine: { ...cfg.engine, name } }));
    expect(json(cli('generate', '--run', copy, '--prompt', 'It', '--max-tokens', '3', '--json')).engine).toBe('torch');
    expect(json(cli('verify', '--run', path.join(copy, 'ckpt', 'step-8'), '--json')).engine).toBe('torch');
    expect(json(cli('score', '--run', copy, '--text', 'It was', '--json')).engine).toBe('torch');
  }
  const sampled = cli('generate', '--run', copy, '--prompt', 'It', '--temperature', '0.8');
  expect(sampled.status).toBe(2);
  expect(sampled.stderr).toBe('mlactl: --temperature: the torch engine decodes greedily (--temperature 0, no --top-k or --top-p); sample with --engine tfjs\n');
}, 240_000);

test('bench decode --engine torch: the same files, every cache checked against float64, bounds and fractions', () => {
  const out = path.join(dir, 'bench');
  const r = cli('bench', 'decode', '--engine', 'torch', '-c', TINY, '--set', 'model.qk_norm.key_groups=2', '--contexts', '64,200', '--repeats', '3', '--warmup', '1', '-o', out);
  expect(r.status).toBe(0);
  const lines = fs.readFileSync(path.join(out, 'decode.csv'), 'utf8').trim().split('\n');
  expect(lines[0].split(',')).toEqual([...DECODE_CSV_COLUMNS]);
  const rows = lines.slice(1).map((l) => Object.fromEntries(l.split(',').map((v, i) => [DECODE_CSV_COLUMNS[i], v])));
  expect(rows.map((x) => `${x.context}/${x.cache}/${x.impl}`)).toEqual(['64/latent/torch', '64/latent+invrms/torch', '64/full-key/torch', '200/latent/torch', '200/latent+invrms/torch', '200/full-key/torch']);
  for (const x of rows) {
    expect(x.backend).toBe('torch');
    expect(x.engine).toBe('torch');
    expect(Number(x.check_rel_err)).toBeLessThanOrEqual(1e-5);
    expect(Number(x.median_ms)).toBeGreaterThan(0);
    expect(Number(x.bound_ms)).toBeGreaterThan(0);
    expect(Number(x.bandwidth_fraction)).toBeCloseTo(Number(x.bound_ms) / Number(x.median_ms), 3);
  }
  // tiny.yaml with G 2: dc 16, dr 4, dn 8, H 4 -> 20, 22, 64 numbers per token, float32
  expect(rows.slice(0, 3).map((x) => Number(x.bytes_per_token_per_layer))).toEqual([80, 88, 256]);
  const result = JSON.parse(fs.readFileSync(path.join(out, 'decode.json'), 'utf8'));
  expect(result.ratios.map((q: { context: number; impl: string }) => `${q.context}/${q.impl}`)).toEqual(['64/torch', '200/torch']);
  expect(result.copy_bandwidth_gbs).toBeGreaterThan(0);
  expect(fs.existsSync(path.join(out, 'memory.json'))).toBe(true);
  expect(r.stdout).toContain('| 200 | latent+invrms | 88 |');
  expect(r.stdout).toMatch(/latent\+invrms \/ latent \(PyTorch path\), median of per-round ratios/);
  expect(r.stdout).toContain('bound ms | of bound |');
  const bf16 = cli('bench', 'decode', '--engine', 'torch', '--dtype', 'bf16', '-c', TINY, '--contexts', '32', '--caches', 'latent,full-key', '--repeats', '1', '-o', path.join(dir, 'bf16'), '--json');
  expect(bf16.status).toBe(0);
  expect(JSON.parse(bf16.stdout).rows.map((x: { bytes_per_token_per_layer: number }) => x.bytes_per_token_per_layer)).toEqual([40, 2 * (4 * 12 + 16)]);
  const refused = cli('bench', 'decode', '--dtype', 'bf16', '-c', TINY);
  expect(refused.status).toBe(2);
  expect(refused.stderr).toBe('mlactl: --dtype: only with --engine torch (the tfjs benchmark stores float32)\n');
}, 300_000);
