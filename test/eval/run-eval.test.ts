// evaluateRun on a real (tiny, random) checkpoint: the window it scores with and what it does with corrupt weights.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import YAML from 'yaml';
import { getTokenizer } from '../../src/data/tokenizer';
import { UserError } from '../../src/errors';
import { evaluateRun } from '../../src/eval/run-eval';
import type { OpenScorer } from '../../src/eval/types';
import { tfjsScorers } from '../../src/inference/scoring';
import { saveModel } from '../../src/engine/tfjs/checkpoint';
import { disposeParams } from '../../src/model/params';
import { loadRunModel, TfScoringModel } from '../../src/inference/scoring';
import { randomParams, tinySpec } from '../helpers';

const SEQ_LEN = 16;
const BOOLQ = path.join(__dirname, 'fixtures', 'boolq.jsonl');
const byte = getTokenizer('byte');
// Room past the training window, so the scorer is not capped by the model's positions.
const spec = tinySpec({ vocab: 260, maxSeqLen: 2 * SEQ_LEN });

const runDirs: string[] = [];
afterAll(() => runDirs.forEach((dir) => fs.rmSync(dir, { recursive: true, force: true })));

/** A run folder with one checkpoint (step 10) of random weights, or of NaN weights when `corrupt`. */
async function runFolder(opts: { corrupt?: boolean; tasks?: string[] } = {}): Promise<{ runDir: string; ckptDir: string }> {
  const runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-run-eval-'));
  runDirs.push(runDir);
  const config = {
    backend: 'cpu',
    data: { seed: 1, val_fraction: 0.1, test_fraction: 0.1, seq_len: SEQ_LEN },
    eval: { tasks: opts.tasks ?? [`boolq=${BOOLQ}`], limit: 0, batch_size: 4 },
  };
  fs.writeFileSync(path.join(runDir, 'config.resolved.yaml'), YAML.stringify(config));
  const ckptDir = path.join(runDir, 'ckpt', 'step-10');
  const P = randomParams(spec, 3);
  if (opts.corrupt) for (const v of Object.values(P)) v.assign(tf.fill(v.shape, NaN));
  await saveModel(ckptDir, P, spec, { name: 'byte', hash: byte.hash, eos: byte.eos });
  disposeParams(P);
  return { runDir, ckptDir };
}

/** log p(choice | the last tokens of context) with exactly `window` tokens fed, scored directly on the checkpoint. */
async function directScore(ckptDir: string, context: string, choice: string, window: number): Promise<number> {
  const model = loadRunModel(ckptDir);
  try {
    const sequence = byte.encode(context + choice).slice(-(window + 1));
    const [scores] = await new TfScoringModel(model, { maxSeqLen: window + 1 }).scoreSequences([sequence]);
    return scores.logprobs.slice(-byte.encode(choice).length).reduce((a, b) => a + b, 0);
  } finally {
    model.dispose();
  }
}

const readItems = (runDir: string, task: string) =>
  fs.readFileSync(path.join(runDir, 'eval', `${task}.jsonl`), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { context: string; choices: string[]; logprobs: number[] });

describe('evaluateRun', () => {
  it('feeds the whole training window: data.seq_len positions of context and continuation, as training does', async () => {
    const { runDir, ckptDir } = await runFolder();
    await evaluateRun({ runDir, openScorer: tfjsScorers('wasm') });
    const items = readItems(runDir, 'boolq');
    expect(items).toHaveLength(2);
    for (const item of items) {
      // Every BoolQ context is far longer than the window, so each sequence is cut to fill it.
      expect(byte.encode(item.context).length).toBeGreaterThan(4 * SEQ_LEN);
      for (const [j, choice] of item.choices.entries()) {
        const full = await directScore(ckptDir, item.context, ' ' + choice, SEQ_LEN);
        const oneShort = await directScore(ckptDir, item.context, ' ' + choice, SEQ_LEN - 1);
        expect(Math.abs(full - oneShort)).toBeGreaterThan(1e-4);
        expect(item.logprobs[j]).toBeCloseTo(full, 5);
      }
    }
  });

  it('a continuation longer than the window is refused naming data.seq_len', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-run-eval-task-'));
    runDirs.push(dir);
    const file = path.join(dir, 'lambada.jsonl');
    fs.writeFileSync(file, JSON.stringify({ text: `The last word is ${'x'.repeat(SEQ_LEN)}` }) + '\n');
    const { runDir } = await runFolder({ tasks: [`lambada=${file}`] });
    await expect(evaluateRun({ runDir, openScorer: tfjsScorers('wasm') })).rejects.toThrow(
      new RegExp(`^lambada item 0: continuation of ${SEQ_LEN + 1} tokens does not fit in the scoring window of ${SEQ_LEN} positions \\(data\\.seq_len\\)`),
    );
  });

  it('refuses a checkpoint whose weights are NaN, naming it, and writes nothing', async () => {
    const { runDir, ckptDir } = await runFolder({ corrupt: true });
    const failure = evaluateRun({ runDir, openScorer: tfjsScorers('wasm') });
    await expect(failure).rejects.toThrow(UserError);
    await expect(failure).rejects.toThrow(`${ckptDir} gives log-probability NaN;`);
    expect(fs.existsSync(path.join(runDir, 'eval'))).toBe(false);
  });
});

describe('results by item limit', () => {
  it('tokenizes while the scorer starts; the opening is timed to when the scorer said it was ready', async () => {
    const { runDir } = await runFolder();
    const want = await evaluateRun({ runDir, openScorer: tfjsScorers('wasm') });
    const wantItems = readItems(runDir, 'boolq');
    let encodedBeforeReady = 0;
    let readyAt = 0;
    // A scorer that, like the torch engine's process, is still loading when openScorer returns.
    const slowStart: OpenScorer = async (dir, opts) => {
      const scorer = await tfjsScorers('wasm')(dir, opts);
      let encoded = 0;
      const loading = new Promise<number>((resolve) =>
        setTimeout(() => {
          encodedBeforeReady = encoded;
          readyAt = Date.now();
          resolve(readyAt);
        }, 400),
      );
      return { ...scorer, tokenizer: { ...scorer.tokenizer, encode: (text: string) => (encoded++, scorer.tokenizer.encode(text)) }, ready: () => loading };
    };
    const started = Date.now();
    const got = await evaluateRun({ runDir, openScorer: slowStart });
    expect(encodedBeforeReady).toBeGreaterThan(0);
    expect(got.openSeconds).toBeGreaterThanOrEqual(0.39);
    expect(got.openSeconds).toBeLessThanOrEqual((readyAt - started) / 1000 + 0.001);
    expect(got.scoringItemsPerSecond).toBeGreaterThanOrEqual(got.itemsPerSecond);
    expect(got.evaluations[0].tasks).toEqual(want.evaluations[0].tasks);
    expect(readItems(runDir, 'boolq')).toEqual(wantItems);
  });

  it('a quick look with another --limit goes to eval/limit-N/ and leaves the standard results as they are', async () => {
    const { runDir } = await runFolder();
    const full = await evaluateRun({ runDir, openScorer: tfjsScorers('wasm') });
    // The wall-clock rate includes opening the scorer; the scoring rate leaves it out, so it is never the lower one.
    expect(full.openSeconds).toBeGreaterThanOrEqual(0);
    expect(full.scoringItemsPerSecond).toBeGreaterThanOrEqual(full.itemsPerSecond);
    expect(full.itemsPerSecond).toBeGreaterThan(0);
    const standard = fs.readFileSync(path.join(runDir, 'eval', 'results.json'), 'utf8');
    expect(JSON.parse(standard).tasks.boolq.n).toBe(2);
    const quick = await evaluateRun({ runDir, limit: 1, openScorer: tfjsScorers('wasm') });
    expect(quick.resultsDir).toBe(path.join(runDir, 'eval', 'limit-1'));
    expect(JSON.parse(fs.readFileSync(path.join(runDir, 'eval', 'limit-1', 'results.json'), 'utf8')).tasks.boolq.n).toBe(1);
    expect(fs.readFileSync(path.join(runDir, 'eval', 'results.json'), 'utf8')).toBe(standard);
  });
});
