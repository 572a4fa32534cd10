import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import {
  checkMemory,
  DEEPSEEK_LIKE_DIMS,
  DecodeCheckError,
  parseBytes,
  parseCaches,
  parseContexts,
  runDecodeBench,
} from '../../src/bench/decode';
import { DECODE_CSV_COLUMNS, memoryAccount, presetMemoryAccount } from '../../src/bench/decode-report';
import { bootstrapMedianInterval, quantile } from '../../src/bench/stats';
import { configToYaml, loadConfig } from '../../src/config/load';
import { saveModel } from '../../src/engine/tfjs/checkpoint';
import { disposeParams } from '../../src/model/params';
import BenchDecode, { type BenchDecodeResult } from '../../src/commands/bench/decode';
import type { FixedCache } from '../../src/model/decode';
import type { ModelSpec } from '../../src/model/spec';
import { randomParams, tinySpec } from '../helpers';
import { runCommand, stubOclifConfig } from './command';

const TINY = path.resolve(__dirname, '../../configs/models/tiny.yaml');
const tmp = () => fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-bench-'));

/** Dims like configs/models/tiny.yaml, qk-norm with two key groups so rk has a group axis to get wrong. */
const tinyDims: ModelSpec = { ...DEEPSEEK_LIKE_DIMS, d: 32, H: 4, dc: 16, dn: 8, dr: 4, dv: 8, G: 2 };

beforeAll(async () => {
  await tf.setBackend('cpu');
  stubOclifConfig();
});

afterAll(() => {
  jest.restoreAllMocks();
});

describe('flag parsing', () => {
  test('contexts take k and m as binary multiples', () => {
    expect(parseContexts('1k,4k,16k')).toEqual([1024, 4096, 16384]);
    expect(parseContexts('64, 128,256k,1m')).toEqual([64, 128, 262144, 1048576]);
    expect(() => parseContexts('4k,abc')).toThrow(/"abc"/);
    expect(() => parseContexts('1')).toThrow(/at least 2/);
  });

  test('caches come back in canonical order; an unknown name is named', () => {
    expect(parseCaches('full-key,latent')).toEqual(['latent', 'full-key']);
    expect(() => parseCaches('latent,foo')).toThrow(/unknown cache "foo"/);
  });

  test('sizes', () => {
    expect(parseBytes('3GB')).toBe(3e9);
    expect(parseBytes('512MiB')).toBe(512 * 2 ** 20);
    expect(parseBytes('1.5k')).toBe(1500);
    expect(parseBytes('2e9')).toBe(2e9);
    expect(() => parseBytes('lots')).toThrow(/--max-memory/);
  });

  test('bootstrap interval of a median', () => {
    expect(bootstrapMedianInterval([3, 3, 3, 3])).toEqual([3, 3]);
    const xs = Array.from({ length: 101 }, (_, i) => i); // median 50; its standard error is about 1.25 * 29 / 10
    const [lo, hi] = bootstrapMedianInterval(xs);
    expect(lo).toBeLessThan(50);
    expect(hi).toBeGreaterThan(50);
    expect(lo).toBeGreaterThan(50 - 15);
    expect(hi).toBeLessThan(50 + 15);
    expect(bootstrapMedianInterval(xs)).toEqual([lo, hi]); // seeded
  });

  test('quantiles interpolate between order statistics', () => {
    expect(quantile([4, 1, 3, 2], 0.5)).toBe(2.5);
    expect(quantile([10, 20, 30, 40, 50], 0.1)).toBe(14);
    expect(quantile([10, 20, 30, 40, 50], 0.9)).toBe(46);
    expect(quantile([7], 0.9)).toBe(7);
  });
});

describe('memory accounting and refusal', () => {
  test('paper-400m: bytes per token per layer and whole-model totals', () => {
    const m = presetMemoryAccount();
    // 24 layers, 16 heads, dc 256, dr 32, dn 64, G = H = 16, float32.
    expect(m.layers).toBe(24);
    expect(m.bytes_per_token_per_layer).toEqual({ latent: (256 + 32) * 4, 'latent+invrms': (256 + 32 + 16) * 4, 'full-key': (16 * 96 + 256) * 4 });
    expect(m.totals.map((t) => t.context)).toEqual([4096, 32768, 262144]);
    expect(m.totals[0].bytes.latent).toBe(1152 * 24 * 4096);
    expect(m.totals[2].bytes['full-key']).toBe(7168 * 24 * 262144);
    expect(memoryAccount('x', { ...DEEPSEEK_LIKE_DIMS, L: 1 }).bytes_per_token_per_layer).toEqual({ latent: 2304, 'latent+invrms': 2368, 'full-key': 14336 });
  });

  test('wasm: 256k with full-key exceeds the 4 GiB heap, the two latent caches fit', () => {
    const all = ['latent', 'latent+invrms', 'full-key'] as const;
    expect(() => checkMemory(DEEPSEEK_LIKE_DIMS, [262144], 1, [...all], 'wasm', 1e12)).toThrow(/--contexts 256k: needs an estimated .* wasm heap/);
    expect(() => checkMemory(DEEPSEEK_LIKE_DIMS, [262144], 1, ['latent', 'latent+invrms'], 'wasm', 1e12)).not.toThrow();
    // On cpu the same caches are held once (no packed copy), so the estimate is smaller.
    const [wasm] = checkMemory(DEEPSEEK_LIKE_DIMS, [4096], 1, [...all], 'wasm', 1e12);
    const [cpu] = checkMemory(DEEPSEEK_LIKE_DIMS, [4096], 1, [...all], 'cpu', 1e12);
    expect(cpu.latent).toBe(4096 * 512 * 4);
    expect(wasm.latent).toBe(2 * 4096 * 512 * 4);
    expect(cpu.caches).toEqual({ latent: 4096 * 64 * 4, 'latent+invrms': 4096 * (64 + 16) * 4, 'full-key': 4096 * 16 * 192 * 4 });
  });

  test('a context beyond --max-memory is refused up front with its estimate (exit 2)', async () => {
    const out = tmp();
    const r = await runCommand(BenchDecode, ['--contexts', '4k,64', '--max-memory', '1MB', '--backend', 'cpu', '--out', out]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/--contexts 4k: needs an estimated [\d.]+ MiB = \d+ bytes .*more than --max-memory/);
    expect(fs.readdirSync(out)).toEqual([]); // nothing ran, nothing was written
  });

  test('a context beyond the free memory is refused without --max-memory', async () => {
    const r = await runCommand(BenchDecode, ['--contexts', '64m', '--backend', 'cpu', '--out', tmp()]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toMatch(/--contexts 64m: needs an estimated .* more than the .* of free memory/);
  });

  test('--key-groups that do not divide the heads are refused naming the flag (exit 2)', async () => {
    const r = await runCommand(BenchDecode, ['--key-groups', '3', '--contexts', '64', '--backend', 'cpu', '--out', tmp()]);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('--key-groups: 3 does not divide the 16 heads');
  });

  test('--key-groups sets G of the DeepSeek-like dims: one rk number per token instead of 16', async () => {
    const out = tmp();
    const r = await runCommand<BenchDecodeResult>(BenchDecode, [
      '--key-groups', '1', '--contexts', '64', '--caches', 'latent,latent+invrms', '--repeats', '1', '--warmup', '0', '--backend', 'wasm', '--out', out,
    ]);
    expect(r.exitCode).toBe(0);
    const json = JSON.parse(fs.readFileSync(path.join(out, 'decode.json'), 'utf8'));
    expect(json.dims).toMatchObject({ n_heads: 16, key_groups: 1 });
    // dc 512 + dr 64 (+ G 1 for latent+invrms) float32 numbers per token
    expect(json.rows.map((row: { bytes_per_token_per_layer: number }) => row.bytes_per_token_per_layer)).toEqual([576 * 4, 577 * 4]);
  }, 60000);

  test('an unknown cache name is an error naming it (exit 2)', async () => {
    const r = await runCommand(BenchDecode, ['--caches', 'latent,foo', '--backend', 'cpu']);
    expect(r.exitCode).toBe(2);
    expect(r.stderr).toContain('unknown cache "foo"');
  });
});

describe('a small benchmark run', () => {
  let out: string;
  let result: BenchDecodeResult;
  let stdout: string;

  beforeAll(async () => {
    out = tmp();
    const r = await runCommand<BenchDecodeResult>(BenchDecode, [
      '--config', TINY, '--set', 'model.qk_norm.key_groups=2', '--contexts', '64,128', '--repeats', '2', '--warmup', '0', '--backend', 'cpu', '--out', out,
    ]);
    expect(r.stderr).not.toMatch(/mlactl:/);
    expect(r.exitCode).toBe(0);
    result = r.result!;
    stdout = r.stdout;
  }, 60000);

  test('decode.csv has the documented columns and one row per context and cache', () => {
    const lines = fs.readFileSync(path.join(out, 'decode.csv'), 'utf8').trim().split('\n');
    expect(lines[0].split(',')).toEqual([...DECODE_CSV_COLUMNS]);
    const rows = lines.slice(1).map((l) => Object.fromEntries(l.split(',').map((v, i) => [DECODE_CSV_COLUMNS[i], v])));
    expect(rows.map((r) => `${r.context}/${r.cache}`)).toEqual(['64/latent', '64/latent+invrms', '64/full-key', '128/latent', '128/latent+invrms', '128/full-key']);
    for (const r of rows) {
      expect(r.backend).toBe('cpu');
      expect(Number(r.key_groups)).toBe(2);
      expect(Number(r.check_rel_err)).toBeLessThanOrEqual(1e-5);
      expect(Number(r.median_ms)).toBeGreaterThan(0);
      expect(Number(r.p10_ms)).toBeLessThanOrEqual(Number(r.median_ms));
      expect(Number(r.p90_ms)).toBeGreaterThanOrEqual(Number(r.median_ms));
    }
    // tiny.yaml: dc 16, dr 4, dn 8, H 4, G 2 -> numbers per token 20, 22, 4*12+16 = 64; four bytes each.
    expect(rows.map((r) => Number(r.bytes_per_token_per_layer)).slice(0, 3)).toEqual([80, 88, 256]);
    expect(Number(rows[3].cache_total_bytes)).toBe(128 * 80);
  });

  test('decode.json, memory.json, the plot and the printed table', () => {
    const json = JSON.parse(fs.readFileSync(path.join(out, 'decode.json'), 'utf8'));
    expect(json.ratios.map((q: { context: number }) => q.context)).toEqual([64, 128]);
    // Per-round ratios (invrms over latent of the same round), then their median; two rounds: the mean of two.
    const [l, i] = [json.rows[0].samples_ms, json.rows[1].samples_ms];
    expect(json.rows[1].ratio_to_latent).toBeCloseTo((i[0] / l[0] + i[1] / l[1]) / 2, 12);
    expect(json.ratios[0].invrms_over_latent).toBeCloseTo(json.rows[1].ratio_to_latent, 12);
    expect(json.ratios[0].invrms_over_latent_of_medians).toBeCloseTo(json.rows[1].median_ms / json.rows[0].median_ms, 12);
    expect(json.rows[0].samples_ms).toHaveLength(2);
    expect(json.dims).toMatchObject({ d_model: 32, n_heads: 4, kv_lora_rank: 16, key_groups: 2, source: TINY });
    const memory = JSON.parse(fs.readFileSync(path.join(out, 'memory.json'), 'utf8'));
    expect(memory.preset.model).toBe('paper-400m');
    expect(memory.bench_dims.bytes_per_token_per_layer.latent).toBe(80);
    expect(fs.readFileSync(path.join(out, 'decode.svg'), 'utf8')).toContain('<svg');
    expect(fs.readFileSync(path.join(out, 'decode.png')).subarray(1, 4).toString()).toBe('PNG');
    expect(stdout).toContain('| 128 | latent+invrms | 88 |');
    expect(stdout).toMatch(/latent\+invrms \/ latent, median of per-round ratios \[95% bootstrap interval\]: 64 [\d.]+ \[[\d.]+, [\d.]+\], 128 /);
    expect(stdout).toContain('KV cache of paper-400m (24 layers');
    expect(result.rows).toHaveLength(6);
  });
});

test('--run takes the attention dims of a checkpoint folder or of a run folder', async () => {
  const root = tmp();
  const spec = tinySpec({ variant: 'qk-norm', G: 2 });
  const P = randomParams(spec, 1);
  await saveModel(path.join(root, 'model'), P, spec, null);
  disposeParams(P);
  const fromCheckpoint = await runCommand<BenchDecodeResult>(BenchDecode, ['--run', path.join(root, 'model'), '--contexts', '32', '--repeats', '1', '--backend', 'cpu', '--out', path.join(root, 'a')]);
  expect(fromCheckpoint.exitCode).toBe(0);
  expect(fromCheckpoint.result!.dims).toMatchObject({ d_model: 24, n_heads: 4, kv_lora_rank: 12, qk_nope_head_dim: 6, qk_rope_head_dim: 4, v_head_dim: 5, key_groups: 2 });

  fs.mkdirSync(path.join(root, 'run'));
  fs.writeFileSync(path.join(root, 'run', 'config.resolved.yaml'), configToYaml(loadConfig(TINY, ['model.n_heads=2', 'model.v_head_dim=16'])));
  const fromRun = await runCommand<BenchDecodeResult>(BenchDecode, ['--run', path.join(root, 'run'), '--contexts', '32', '--repeats', '1', '--backend', 'cpu', '--out', path.join(root, 'b')]);
  expect(fromRun.exitCode).toBe(0);
  expect(fromRun.result!.dims).toMatchObject({ d_model: 32, n_heads: 2, kv_lora_rank: 16, v_head_dim: 16, key_groups: 2 });
});

describe('the equality check', () => {
  const base = {
    dims: tinyDims,
    dimsSource: 'test',
    contexts: [64],
    batch: 2,
    repeats: 1,
    warmup: 0,
    caches: ['latent', 'latent+invrms', 'full-key'] as const,
    seed: 3,
    backend: { name: 'cpu', device: 'test' },
  };
  const run = (tamper?: (kind: string, cache: FixedCache) => void) => runDecodeBench({ ...base, caches: [...base.caches], tamper });

  /** Replace one tensor of a cache by a changed copy. */
  const changed = (t: tf.Tensor2D, f: (v: Float32Array) => void): tf.Tensor2D => {
    const v = t.dataSync().slice() as Float32Array;
    f(v);
    t.dispose();
    return tf.tensor2d(v, t.shape);
  };

  test.each([
    ['scope full, G = 2', {}],
    ['scope nope, G = 2, query compression', { scope: 'nope', dq: 10 }],
    ['scope full, G = 1', { G: 1 }],
    ['scope nope, G = H', { scope: 'nope', G: 4 }],
  ] as [string, Partial<ModelSpec>][])('untouched caches agree with the reference for every kind and both sequences (%s)', async (_name, over) => {
    const r = await runDecodeBench({ ...base, caches: [...base.caches], dims: { ...tinyDims, ...over } });
    expect(r.rows.map((row) => row.cache)).toEqual(['latent', 'latent+invrms', 'full-key']);
    for (const row of r.rows) expect(row.check_rel_err).toBeLessThan(1e-5);
  });

  test.each([
    ['latent+invrms', 'one group of rk of one token (second sequence)', (c: FixedCache) => {
      if (c.kind === 'latent+invrms') c.rk![1] = changed(c.rk![1], (v) => { v[10 * 2 + 1] *= 1.5; });
    }],
    ['latent', 'the rotated key of one token', (c: FixedCache) => {
      if (c.kind === 'latent') c.kpr[0] = changed(c.kpr[0], (v) => { v[20 * 4 + 1] += 1; });
    }],
    ['full-key', 'two heads swapped', (c: FixedCache) => {
      if (c.kind === 'full-key') [c.keys[0][1], c.keys[0][2]] = [c.keys[0][2], c.keys[0][1]];
    }],
  ])('a corrupted %s cache (%s) fails loudly before timing', async (kind, _what, tamper) => {
    await expect(run((k, cache) => k === kind && tamper(cache))).rejects.toThrow(DecodeCheckError);
    await expect(run((k, cache) => k === kind && tamper(cache))).rejects.toThrow(new RegExp(`the ${kind.replace('+', '\\+')} cache gives a different attention output`));
  });

  test('no tensors leak across a run', async () => {
    await run();
    const before = tf.memory().numTensors;
    await run();
    expect(tf.memory().numTensors).toBe(before);
  });
});
