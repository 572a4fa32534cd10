import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { UserError } from '../../src/errors';
import { tokenizeDocuments } from '../../src/data/dataset';
import {
  dtypeForVocab,
  findShardManifest,
  MANIFEST_FILE,
  openShards,
  prepareShards,
  readManifest,
  ShardManifest,
  verifyShards,
} from '../../src/data/shards';
import { loadDocuments } from '../../src/data/sources';
import { byteTokenizer, gpt2Tokenizer, Tokenizer } from '../../src/data/tokenizer';
import DataVerify, { type DataVerifyResult } from '../../src/commands/data/verify';
import { runCommand, stubOclifConfig } from '../bench/command';

/** A stand-in with ids above 65535, to exercise uint32 shards: each character becomes 65500 + its code. */
const wideTokenizer: Tokenizer = {
  name: 'byte',
  vocabSize: 70000,
  eos: 69999,
  encode: (text) => Array.from(text, (ch) => 65500 + ch.codePointAt(0)!),
  decode: (ids) => String.fromCodePoint(...ids.map((id) => id - 65500)),
  hash: 'wide-test-tokenizer',
};

describe('shards', () => {
  let dir: string;
  let corpus: string;
  const texts = Array.from({ length: 24 }, (_, i) => `Document ${i}: ${'lorem ipsum dolor '.repeat(1 + (i % 5))}é${i}`);
  const settings = { seed: 3, val_fraction: 0.2, test_fraction: 0.1 };

  beforeAll(() => {
    stubOclifConfig();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-shards-'));
    corpus = path.join(dir, 'corpus.jsonl');
    fs.writeFileSync(corpus, texts.map((text) => JSON.stringify({ text })).join('\n'));
  });
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

  const prepare = (outDir: string, tokenizer = byteTokenizer(), shardTokens = 100) =>
    prepareShards(corpus, tokenizer, outDir, {
      shardTokens,
      seed: settings.seed,
      valFraction: settings.val_fraction,
      testFraction: settings.test_fraction,
    });

  it('round-trips: reading the shards equals tokenizing directly, for uint16 and uint32', async () => {
    for (const [tokenizer, dtype] of [[byteTokenizer(), 'uint16'], [gpt2Tokenizer(), 'uint16'], [wideTokenizer, 'uint32']] as const) {
      const outDir = path.join(dir, `out-${tokenizer.name}-${dtype}`);
      const manifest = await prepare(outDir, tokenizer);
      expect(manifest.dtype).toBe(dtype);
      const direct = tokenizeDocuments(loadDocuments(corpus).docs, tokenizer, settings);
      const opened = openShards(path.join(outDir, MANIFEST_FILE));
      expect(opened.manifest.splits.documents).toEqual(direct.split);
      for (const split of ['train', 'val', 'test'] as const) {
        const reader = opened.readers[split];
        expect(reader.length).toBe(direct[split].length);
        expect(Array.from(reader.read(0, reader.length))).toEqual(Array.from(direct[split].read(0, direct[split].length)));
        // A window straddling the first shard boundary (100 tokens per shard).
        if (reader.length > 150) expect(Array.from(reader.read(95, 10))).toEqual(Array.from(direct[split].read(95, 10)));
        reader.close();
      }
      expect(manifest.total_tokens).toBe(direct.train.length + direct.val.length + direct.test.length);
    }
  });

  it('writes little-endian shards of at most shardTokens tokens with matching sha256', async () => {
    const outDir = path.join(dir, 'out-hash');
    const manifest = await prepare(outDir);
    const train = manifest.shards.filter((s) => s.split === 'train');
    expect(train.length).toBeGreaterThan(1);
    expect(train.slice(0, -1).every((s) => s.tokens === 100)).toBe(true);
    for (const shard of manifest.shards) {
      const bytes = fs.readFileSync(path.join(outDir, shard.file));
      expect(bytes.length).toBe(shard.tokens * 2);
      expect(createHash('sha256').update(bytes).digest('hex')).toBe(shard.sha256);
    }
    // The first train document is "Document 0: ..." unless it went to val/test; check the first token's bytes.
    const firstTrain = fs.readFileSync(path.join(outDir, train[0].file));
    const firstTrainText = texts[Number(manifest.splits.documents.train[0].split(':')[1]) - 1];
    expect(firstTrain.readUInt16LE(0)).toBe(firstTrainText.charCodeAt(0));
    expect(manifest).toMatchObject({
      format: 'mlactl-shards',
      version: 1,
      tokenizer: 'byte',
      tokenizer_hash: byteTokenizer().hash,
      source_hash: loadDocuments(corpus).hash,
    });
    expect(readManifest(path.join(outDir, MANIFEST_FILE))).toEqual(manifest);
    expect(() => verifyShards(path.join(outDir, MANIFEST_FILE))).not.toThrow();
  });

  it('detects a changed shard', async () => {
    const outDir = path.join(dir, 'out-tamper');
    const manifest = await prepare(outDir);
    const victim = path.join(outDir, manifest.shards[0].file);
    const bytes = fs.readFileSync(victim);
    bytes[0] ^= 1;
    fs.writeFileSync(victim, bytes);
    expect(() => verifyShards(path.join(outDir, MANIFEST_FILE))).toThrow(UserError);
    fs.writeFileSync(victim, bytes.subarray(2));
    expect(() => openShards(path.join(outDir, MANIFEST_FILE))).toThrow(/bytes, the manifest says/);
  });

  it('`mlactl data verify` passes an intact folder and refuses a changed shard or a missing manifest, naming the file', async () => {
    const outDir = path.join(dir, 'out-verify-command');
    const manifest = await prepare(outDir);
    const ok = await runCommand<DataVerifyResult>(DataVerify, [outDir, '--json']);
    expect(ok.exitCode).toBe(0);
    expect(ok.result).toEqual({ folder: outDir, shards: manifest.shards.length, tokens: manifest.splits.tokens });
    const victim = path.join(outDir, manifest.shards[1].file);
    const bytes = fs.readFileSync(victim);
    bytes[3] ^= 1;
    fs.writeFileSync(victim, bytes);
    const changed = await runCommand(DataVerify, [outDir]);
    expect(changed.exitCode).toBe(2);
    expect(changed.stderr).toContain(`shard ${victim} does not match its sha256`);
    const missing = await runCommand(DataVerify, [path.join(dir, 'no-such-folder')]);
    expect(missing.exitCode).toBe(2);
    expect(missing.stderr).toContain(path.join(dir, 'no-such-folder', MANIFEST_FILE));
  });

  it('replaces an earlier shard folder atomically but refuses other folders', async () => {
    const outDir = path.join(dir, 'out-replace');
    await prepare(outDir, byteTokenizer(), 1000);
    const second: ShardManifest = await prepare(outDir, byteTokenizer(), 50);
    expect(readManifest(path.join(outDir, MANIFEST_FILE))).toEqual(second);
    // Only the new set's files remain, and no temporary siblings.
    expect(fs.readdirSync(outDir).sort()).toEqual([...second.shards.map((s) => s.file), MANIFEST_FILE].sort());
    expect(fs.readdirSync(dir).filter((name) => name.startsWith('out-replace.'))).toEqual([]);

    const precious = path.join(dir, 'precious');
    fs.mkdirSync(precious);
    fs.writeFileSync(path.join(precious, 'thesis.txt'), 'keep me');
    await expect(prepare(precious)).rejects.toThrow(/not a shard folder/);
    expect(fs.readdirSync(precious)).toEqual(['thesis.txt']);
  });

  it('reports progress per document', async () => {
    const calls: [number, number][] = [];
    await prepareShards(corpus, byteTokenizer(), path.join(dir, 'out-progress'), {
      seed: 1,
      valFraction: 0.1,
      testFraction: 0.1,
      onProgress: (done, total) => calls.push([done, total]),
    });
    expect(calls).toHaveLength(texts.length);
    expect(calls[calls.length - 1]).toEqual([texts.length, texts.length]);
  });

  it('finds manifests and chooses the dtype by vocabulary size', () => {
    expect(findShardManifest(path.join(dir, 'out-hash'))).toBe(path.join(dir, 'out-hash', MANIFEST_FILE));
    expect(findShardManifest(corpus)).toBeUndefined();
    expect(dtypeForVocab(50257)).toBe('uint16');
    expect(dtypeForVocab(65536)).toBe('uint16');
    expect(dtypeForVocab(65537)).toBe('uint32');
  });
});
