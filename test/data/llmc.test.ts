// llm.c / modded-nanogpt FineWeb shards as a data source: read in place across file boundaries, refused by name
// when a header is wrong, and the same windows in both engines.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { openTrainingData } from '../../src/data/dataset';
import { LLMC_HEADER_BYTES, LLMC_MAGIC } from '../../src/data/llmc';
import { findTorch } from '../../src/engine/torch';
import { readMetrics } from '../../src/runfolder/metrics';

const ROOT = path.resolve(__dirname, '../..');
const BIN = path.join(ROOT, 'bin', 'run.js');
const TINY = path.join(ROOT, 'configs/models/tiny.yaml');

function shard(file: string, tokens: number[], magic = LLMC_MAGIC): void {
  const head = Buffer.alloc(LLMC_HEADER_BYTES);
  head.writeInt32LE(magic, 0);
  head.writeInt32LE(1, 4);
  head.writeInt32LE(tokens.length, 8);
  const body = Buffer.alloc(tokens.length * 2);
  tokens.forEach((t, i) => body.writeUInt16LE(t, i * 2));
  fs.writeFileSync(file, Buffer.concat([head, body]));
}

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-llmc-'));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
const ids = (n: number, seed: number) => Array.from({ length: n }, (_, i) => (i * 7919 + seed * 104729) % 50257);
const data = path.join(dir, 'fineweb');
fs.mkdirSync(data);
shard(path.join(data, 'fineweb_train_000001.bin'), ids(3000, 1));
shard(path.join(data, 'fineweb_train_000002.bin'), ids(2500, 2));
shard(path.join(data, 'fineweb_val_000000.bin'), ids(1200, 3));
const base = { seed: 7, val_fraction: 0.05, test_fraction: 0.1, seq_len: 32 };

test('a folder of shards is the training and validation streams, read in place across files', () => {
  const d = openTrainingData({ ...base, source: data, tokenizer: 'gpt2' });
  try {
    expect(d.origin).toBe('llmc');
    expect([d.train.length, d.val.length, d.test.length]).toEqual([5500, 1200, 0]);
    expect(Array.from(d.train.read(2995, 10))).toEqual([...ids(3000, 1).slice(2995), ...ids(2500, 2).slice(0, 5)]);
    expect(Array.from(d.val.read(0, 4))).toEqual(ids(1200, 3).slice(0, 4));
    expect(d.split).toEqual({ train: ['fineweb_train_000001.bin', 'fineweb_train_000002.bin'], val: ['fineweb_val_000000.bin'], test: [] });
  } finally {
    d.close();
  }
});

test('a wrong magic, a size that disagrees with the header, a tokenizer other than gpt2: one line naming the file or key', () => {
  const bad = path.join(dir, 'bad');
  fs.mkdirSync(bad);
  shard(path.join(bad, 'x_train_0.bin'), ids(100, 1), 12345);
  expect(() => openTrainingData({ ...base, source: bad, tokenizer: 'gpt2' })).toThrow(`data.source: ${path.join(bad, 'x_train_0.bin')}: not an llm.c token shard (magic 12345, expected ${LLMC_MAGIC})`);
  shard(path.join(bad, 'x_train_0.bin'), ids(100, 1));
  fs.appendFileSync(path.join(bad, 'x_train_0.bin'), Buffer.alloc(2));
  expect(() => openTrainingData({ ...base, source: bad, tokenizer: 'gpt2' })).toThrow(/header says 100 tokens, the file holds 101/);
  expect(() => openTrainingData({ ...base, source: data, tokenizer: 'byte' })).toThrow(/data.tokenizer: .* holds llm.c shards of GPT-2 tokens; set data.tokenizer: gpt2/);
  const cli = spawnSync(process.execPath, [BIN, 'train', '--config', TINY, '--set', `data.source=${bad}`, '--set', 'data.tokenizer=gpt2', '--run-dir', path.join(dir, 'never')], { encoding: 'utf8' });
  expect(cli.status).toBe(2);
  expect(cli.stderr.trim().split('\n')).toHaveLength(1);
  expect(fs.existsSync(path.join(dir, 'never'))).toBe(false);
});

test('both engines train on the shards with the same windows (batch hashes)', () => {
  const found = findTorch({ engine: { name: 'torch', python: '', gpus: 1, precision: 'fp32', compile: 'off', threads: 1, device: 'cpu' } });
  expect('reasons' in found ? found.reasons : []).toEqual([]);
  const python = 'probe' in found ? found.probe.python : '';
  const sets = ['data.tokenizer=gpt2', `data.source=${data}`, 'train.tokens=768', 'engine.threads=1', 'backend=wasm'].flatMap((s) => ['--set', s]);
  for (const engine of ['tfjs', 'torch']) {
    const r = spawnSync(process.execPath, [BIN, 'train', '--config', TINY, ...sets, '--engine', engine, '--run-dir', path.join(dir, engine)], { encoding: 'utf8', env: { ...process.env, MLACTL_PYTHON: python } });
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.status).toBe(0);
  }
  const hashes = (e: string) => readMetrics(path.join(dir, e)).map((m) => m.batch_hash);
  expect(hashes('torch')).toHaveLength(6);
  expect(hashes('torch')).toEqual(hashes('tfjs'));
  expect(JSON.parse(fs.readFileSync(path.join(dir, 'torch', 'manifest.json'), 'utf8')).data_origin).toBe('llmc');
});
