import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { DataConfig } from '../../src/config/types';
import { UserError } from '../../src/errors';
import { openTrainingData, tokenizeDocuments } from '../../src/data/dataset';
import { prepareShards } from '../../src/data/shards';
import { byteTokenizer } from '../../src/data/tokenizer';

const dataConfig = (overrides: Partial<DataConfig>): DataConfig => ({
  source: 'brown',
  tokenizer: 'byte',
  seq_len: 64,
  seed: 0,
  val_fraction: 0.05,
  test_fraction: 0.05,
  ...overrides,
});

describe('tokenizeDocuments', () => {
  it('joins each split in source order with eos after every document', () => {
    const docs = ['aa', 'b', 'cc', 'd', 'e', 'f', 'g', 'h', 'i', 'j'].map((text, i) => ({ id: `d${i}`, text }));
    const result = tokenizeDocuments(docs, byteTokenizer(), { seed: 1, val_fraction: 0.2, test_fraction: 0.1 });
    expect(result.split.val).toHaveLength(2);
    expect(result.split.test).toHaveLength(1);
    const expectedStream = (ids: string[]) =>
      docs.filter((doc) => ids.includes(doc.id)).flatMap((doc) => [...Buffer.from(doc.text)].concat(256));
    for (const name of ['train', 'val', 'test'] as const) {
      expect(Array.from(result[name].read(0, result[name].length))).toEqual(expectedStream(result.split[name]));
    }
  });
});

describe('openTrainingData', () => {
  let dir: string;
  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-dataset-'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('splits Brown by genre so every genre is in every split, and caches the tokenization', () => {
    const data = openTrainingData(dataConfig({}));
    expect(data.origin).toBe('documents');
    for (const name of ['train', 'val', 'test'] as const) {
      expect(new Set(data.split[name].map((id) => id[1])).size).toBe(15);
    }
    // ~6 M characters, nearly all ASCII, split about 90/5/5.
    expect(data.train.length).toBeGreaterThan(4_500_000);
    expect(data.val.length).toBeGreaterThan(100_000);
    expect(openTrainingData(dataConfig({})).train).toBe(data.train);
  });

  it('opens a shard folder and checks its tokenizer', async () => {
    const corpus = path.join(dir, 'c.jsonl');
    fs.writeFileSync(corpus, Array.from({ length: 10 }, (_, i) => JSON.stringify({ text: `text number ${i}` })).join('\n'));
    const shardDir = path.join(dir, 'shards');
    await prepareShards(corpus, byteTokenizer(), shardDir, { seed: 2, valFraction: 0.2, testFraction: 0.2 });
    const fromShards = openTrainingData(dataConfig({ source: shardDir }));
    const fromText = openTrainingData(dataConfig({ source: corpus, seed: 2, val_fraction: 0.2, test_fraction: 0.2 }));
    expect(fromShards.origin).toBe('shards');
    expect(Array.from(fromShards.train.read(0, fromShards.train.length))).toEqual(Array.from(fromText.train.read(0, fromText.train.length)));
    expect(fromShards.sourceHash).toBe(fromText.sourceHash);
    fromShards.close();
    expect(() => openTrainingData(dataConfig({ source: shardDir, tokenizer: 'gpt2' }))).toThrow(UserError);
    expect(() => openTrainingData(dataConfig({ source: shardDir, tokenizer: 'gpt2' }))).toThrow(/data\.tokenizer/);
  });
});
