// End-to-end: `mlactl verify` and `mlactl score` through the built CLI (`npm test` builds dist/ first).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { getTokenizer } from '../../src/data/tokenizer';
import { saveModel } from '../../src/engine/tfjs/checkpoint';
import { disposeParams } from '../../src/model/params';
import { loadRunModel, scoreText, TfScoringModel } from '../../src/inference/scoring';
import { randomParams, tinySpec } from '../helpers';
import { runMlactl as mlactl } from '../cli';

const ROOT = path.resolve(__dirname, '../..');
const TINY = 'configs/models/tiny.yaml';

let runDir: string;

beforeAll(async () => {
  for (const f of ['dist/commands/verify.js', 'dist/commands/score.js']) {
    if (!fs.existsSync(path.join(ROOT, f))) throw new Error(`${f} is missing: build first with \`npm run build\` (npm test does it)`);
  }
  await tf.setBackend('cpu');
  // A run folder with two checkpoints of a small byte-level model; max_seq_len 16 forces sliding windows.
  runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-cli-run-'));
  const s = tinySpec({ vocab: 320, variant: 'qk-norm', G: 2, maxSeqLen: 16 });
  const byte = getTokenizer('byte');
  for (const [step, seed] of [[5, 1], [10, 2]]) {
    const P = randomParams(s, seed);
    const dir = path.join(runDir, 'ckpt', `step-${step}`);
    await saveModel(dir, P, s, { name: 'byte', hash: byte.hash, eos: byte.eos });
    fs.writeFileSync(path.join(dir, 'state.json'), JSON.stringify({ step }));
    disposeParams(P);
  }
});

test('verify: the tiny config passes (qk-norm, 2 key groups) and fails with exit 1 at tolerance 0', async () => {
  const [qkNorm, strict] = await Promise.all([
    mlactl(['verify', '--config', TINY, '--set', 'model.variant=qk-norm', '--set', 'model.qk_norm.key_groups=2', '--backend', 'cpu', '--json']),
    mlactl(['verify', '--config', TINY, '--tolerance', '0', '--backend', 'cpu']),
  ]);
  expect(qkNorm.code).toBe(0);
  const report = JSON.parse(qkNorm.stdout);
  expect(report).toMatchObject({ pass: true, backend: 'cpu', variant: 'qk-norm', tolerance: 1e-5 });
  expect(report.comparisons.map((c: { pair: string }) => c.pair)).toEqual([
    'training vs reference', 'latent+invrms vs reference', 'full-key vs reference', 'latent+invrms vs training', 'full-key vs training',
  ]);

  expect(strict.code).toBe(1);
  expect(strict.stdout).toMatch(/\| latent vs training \| [\d.]+e-\d+ \| 0 \| FAIL \|/);
  expect(strict.stderr.trim().split('\n')).toEqual([expect.stringMatching(/^mlactl: verify failed: training vs reference .* exceed tolerance 0$/)]);
});

test('verify --run checks a checkpoint', async () => {
  const r = await mlactl(['verify', '--run', runDir, '--step', '5', '--tokens', '10', '--backend', 'cpu', '--json']);
  expect(r.code).toBe(0);
  expect(JSON.parse(r.stdout)).toMatchObject({ pass: true, step: 5, tokens: 10, source: path.join(runDir, 'ckpt', 'step-5') });
});

test('score: per-token log-probabilities over sliding windows, equal to the library on the same checkpoint', async () => {
  const text = 'It was a bright cold day in April, and the clocks were striking thirteen.';
  const file = path.join(runDir, 'text.txt');
  fs.writeFileSync(file, text);
  const [json, human] = await Promise.all([
    mlactl(['score', '--run', runDir, '--text', text, '--backend', 'cpu', '--json']),
    mlactl(['score', '--run', runDir, '--step', '5', '--file', file, '--backend', 'cpu']),
  ]);
  expect(json.code).toBe(0);
  const r = JSON.parse(json.stdout);
  expect(r).toMatchObject({ step: 10, tokenizer: 'byte', n_tokens: text.length, windows: Math.ceil(text.length / 15) });
  expect(r.tokens.map((t: { text: string }) => t.text).join('')).toBe(text);

  const model = loadRunModel(runDir);
  const want = await scoreText(new TfScoringModel(model), text);
  model.dispose();
  expect(r.total_logprob).toBeCloseTo(want.total_logprob, 6);
  r.tokens.forEach((t: { logprob: number }, i: number) => expect(t.logprob).toBeCloseTo(want.tokens[i].logprob, 6));
  expect(r.perplexity).toBeCloseTo(Math.exp(-r.total_logprob / r.n_tokens), 8);

  expect(human.code).toBe(0);
  expect(human.stdout).toContain('| 0 | 73 | "I" |');
  expect(human.stdout).toMatch(new RegExp(`${text.length} tokens: total -[\\d.]+, mean -[\\d.]+, perplexity [\\d.]+ \\(.*step-5, step 5, 5 windows\\)`));
});
