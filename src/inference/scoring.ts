/**
 * A trained model as the evaluation library sees it: `loadRunModel` finds and loads a checkpoint with its
 * tokenizer, and `TfScoringModel` turns it into a `ScoringModel` (src/eval/types.ts) that scores token sequences.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import type { Tokenizer } from '../data/tokenizer';
import { UserError } from '../errors';
import { DEFAULT_EVAL_BATCH_SIZE, perplexity, rollingWindows, scoreInBatches, windowFrom } from '../eval/loglikelihood';
import type { OpenScorer, ScoringModel, TokenScores } from '../eval/types';
import { initBackend, maxBindingBytes } from '../backend';
import type { BackendName } from '../config/types';
import { experimentArmsHint } from '../runfolder/folder';
import { listCheckpoints } from '../runfolder/training-checkpoint';
import { loadModel } from '../engine/tfjs/checkpoint';
import { checkpointTokenizer, type CheckpointConfigJson } from '../runfolder/checkpoint';
import { RopeTables } from '../model/layers';
import { disposeParams, type Params } from '../model/params';
import type { ModelSpec } from '../model/spec';
import { forward } from '../model/transformer';

export interface LoadedModel {
  spec: ModelSpec;
  params: Params;
  tokenizer: Tokenizer;
  rope: RopeTables;
  /** The folder holding model.safetensors and config.json. */
  ckptDir: string;
  /** The training step of the checkpoint, or null for a model folder that does not say. */
  step: number | null;
  config: CheckpointConfigJson;
  dispose(): void;
}

const isModelFolder = (dir: string) => fs.existsSync(path.join(dir, 'model.safetensors')) && fs.existsSync(path.join(dir, 'config.json'));

/** The step of a model folder: its `step-N` name, else `state.json`'s step, else unknown. */
function stepOfModelFolder(dir: string): number | null {
  const named = /^step-(\d+)$/.exec(path.basename(path.resolve(dir)));
  if (named) return Number(named[1]);
  const stateFile = path.join(dir, 'state.json');
  if (fs.existsSync(stateFile)) {
    try {
      const step = (JSON.parse(fs.readFileSync(stateFile, 'utf8')) as { step?: unknown }).step;
      if (typeof step === 'number') return step;
    } catch {
      // An unreadable state.json says nothing about the model; the step is just unknown.
    }
  }
  return null;
}

/** Which model folder a path names: a model folder itself, or a run folder's newest (or `step`) checkpoint. */
export function resolveModelFolder(runDirOrCkpt: string, step?: number): { dir: string; step: number | null } {
  if (!fs.existsSync(runDirOrCkpt)) throw new UserError(`${runDirOrCkpt}: no such folder`);
  if (!fs.statSync(runDirOrCkpt).isDirectory()) throw new UserError(`${runDirOrCkpt}: not a folder (expected a run folder or a checkpoint folder)`);
  if (isModelFolder(runDirOrCkpt)) {
    const own = stepOfModelFolder(runDirOrCkpt);
    if (step !== undefined && own !== step) {
      throw new UserError(`${runDirOrCkpt}: is the checkpoint of step ${own ?? 'unknown'}, not step ${step} (pass the run folder to choose a step)`);
    }
    return { dir: runDirOrCkpt, step: own };
  }
  const arms = experimentArmsHint(runDirOrCkpt);
  if (arms) throw new UserError(arms);
  if (!fs.existsSync(path.join(runDirOrCkpt, 'ckpt'))) {
    throw new UserError(`${runDirOrCkpt}: neither a run folder (no ckpt/) nor a model folder (no model.safetensors + config.json)`);
  }
  const ckpts = listCheckpoints(runDirOrCkpt);
  if (ckpts.length === 0) throw new UserError(`${runDirOrCkpt}: the run has no complete checkpoint yet`);
  if (step === undefined) return ckpts[ckpts.length - 1];
  const chosen = ckpts.find((c) => c.step === step);
  if (!chosen) throw new UserError(`--step ${step}: ${runDirOrCkpt} has no checkpoint of that step (steps: ${ckpts.map((c) => c.step).join(', ')})`);
  return chosen;
}

/**
 * Load a model for inference from a run folder (its newest checkpoint, or the one of `opts.step`), a
 * `ckpt/step-N` folder, or any folder with model.safetensors + config.json. The tokenizer is the one config.json
 * names; a hash that differs from this build's tokenizer means the ids would not match, so it is refused.
 */
export function loadRunModel(runDirOrCkpt: string, opts: { step?: number } = {}): LoadedModel {
  const where = resolveModelFolder(runDirOrCkpt, opts.step);
  const cfgFile = path.join(where.dir, 'config.json');
  const loaded = loadModel(where.dir);
  try {
    const tokenizer = checkpointTokenizer(loaded.config, cfgFile);
    if (tokenizer.vocabSize > loaded.spec.vocab) {
      throw new UserError(`${cfgFile}: vocab_size ${loaded.spec.vocab} is smaller than the ${tokenizer.name} tokenizer's ${tokenizer.vocabSize} ids`);
    }
    const rope = new RopeTables(loaded.spec.dr, loaded.spec.maxSeqLen, loaded.spec.ropeTheta, [0, loaded.spec.dn]);
    const params = loaded.params;
    return {
      spec: loaded.spec,
      params,
      tokenizer,
      rope,
      ckptDir: where.dir,
      step: where.step,
      config: loaded.config,
      dispose: () => {
        disposeParams(params);
        rope.dispose();
      },
    };
  } catch (err) {
    disposeParams(loaded.params);
    throw err;
  }
}

export interface TfScoringOptions {
  /** Sequences per forward pass. The logits of one pass take batchSize x length x vocab floats. */
  batchSize?: number;
  /**
   * Longest sequence scored, in tokens (default and cap: max_seq_len + 1, that is max_seq_len positions fed, the last
   * token only a target). Evaluation passes the training window: positions past it were never trained, and
   * attention cost grows with the square of the length.
   */
  maxSeqLen?: number;
}

export const DEFAULT_SCORING_BATCH_SIZE = 8;

/**
 * The training-form forward pass as a `ScoringModel`. Sequences of one pass are right-padded to a common length:
 * attention is causal, so the padding after a sequence's last token never reaches its real positions, and the
 * padded positions' scores are dropped. Only [B, T] numbers per pass leave the device, never the [B, T, V] logits.
 */
export class TfScoringModel implements ScoringModel {
  readonly maxSeqLen: number;
  readonly batchSize: number;

  constructor(
    private readonly model: { spec: ModelSpec; params: Params; rope: RopeTables; tokenizer: Tokenizer },
    opts: TfScoringOptions = {},
  ) {
    // A sequence of n tokens feeds n - 1 positions: the model's max_seq_len positions take max_seq_len + 1 tokens.
    this.maxSeqLen = Math.min(opts.maxSeqLen ?? model.spec.maxSeqLen + 1, model.spec.maxSeqLen + 1);
    this.batchSize = opts.batchSize ?? DEFAULT_SCORING_BATCH_SIZE;
    if (!Number.isInteger(this.batchSize) || this.batchSize < 1) throw new UserError(`scoring batch size must be a positive integer, got ${this.batchSize}`);
  }

  get tokenizer(): Tokenizer {
    return this.model.tokenizer;
  }

  async scoreSequences(seqs: number[][], from?: number[]): Promise<TokenScores[]> {
    const { vocab } = this.model.spec;
    if (from && from.length !== seqs.length) throw new Error(`scoreSequences: ${from.length} start positions for ${seqs.length} sequences`);
    seqs.forEach((seq, i) => {
      if (seq.length < 2 || seq.length > this.maxSeqLen) throw new Error(`scoreSequences: sequence ${i} has ${seq.length} tokens; expected 2..${this.maxSeqLen}`);
      for (const id of seq) if (!Number.isInteger(id) || id < 0 || id >= vocab) throw new Error(`scoreSequences: sequence ${i} has token id ${id} outside 0..${vocab - 1}`);
      const f = from?.[i] ?? 0;
      if (!Number.isInteger(f) || f < 0 || f > seq.length - 2) throw new Error(`scoreSequences: sequence ${i} starts at ${f}; expected 0..${seq.length - 2}`);
    });
    const starts = from ?? new Array<number>(seqs.length).fill(0);
    const out: TokenScores[] = [];
    for (let begin = 0; begin < seqs.length; begin += this.batchSize) {
      out.push(...(await this.scoreBatch(seqs.slice(begin, begin + this.batchSize), starts.slice(begin, begin + this.batchSize))));
    }
    return out;
  }

  private async scoreBatch(seqs: number[][], from: number[]): Promise<TokenScores[]> {
    const { spec, params, rope } = this.model;
    const B = seqs.length;
    const T = Math.max(...seqs.map((s) => s.length));
    // Inputs are positions 0..T-2 (the last token predicts nothing); targets are positions 1..T-1.
    const inputs = new Int32Array(B * (T - 1));
    const targets = new Int32Array(B * (T - 1));
    seqs.forEach((seq, b) => {
      for (let t = 0; t + 1 < seq.length; t++) {
        inputs[b * (T - 1) + t] = seq[t];
        targets[b * (T - 1) + t] = seq[t + 1];
      }
    });
    const [logprobT, greedyT] = tf.tidy(() => {
      const logits = forward(params, spec, rope, tf.tensor2d(inputs, [B, T - 1], 'int32')).logits; // [B, T-1, V]
      const target = tf.tensor2d(targets, [B, T - 1], 'int32');
      // log p(target) = logit(target) - logsumexp(logits): a one-hot dot picks the logit without a [B, T, V] download.
      const targetLogit = tf.sum(tf.mul(logits, tf.oneHot(target, spec.vocab)), -1); // [B, T-1]
      const logprob = tf.sub(targetLogit, tf.logSumExp(logits, -1));
      const greedy = tf.equal(tf.argMax(logits, -1), target).toInt(); // [B, T-1]
      return [logprob, greedy];
    });
    try {
      const [lp, gr] = await Promise.all([logprobT.data(), greedyT.data()]);
      return seqs.map((seq, b) => {
        const n = seq.length - 1;
        const off = b * (T - 1);
        return { logprobs: Float64Array.from(lp.subarray(off + from[b], off + n)), greedy: Uint8Array.from(gr.subarray(off + from[b], off + n)) };
      });
    } finally {
      tf.dispose([logprobT, greedyT]);
    }
  }
}

export interface TokenLogprob {
  /** Position in the text's token list (0 is the first text token; the eos before it is not scored). */
  index: number;
  id: number;
  /** The token decoded alone (a byte of a multi-byte character decodes to U+FFFD). */
  text: string;
  /** Natural log of p(token | everything before it in its window). */
  logprob: number;
}

export interface TextScore {
  n_tokens: number;
  tokens: TokenLogprob[];
  total_logprob: number;
  mean_logprob: number;
  perplexity: number;
  /** Forward passes: 1 when the text's tokens (after the leading eos) fit max_seq_len positions. */
  windows: number;
  stride: number;
}

/**
 * Per-token log-probabilities of a text, the first token conditioned on eos as at a document start. Texts longer
 * than the context are cut into the windows of `rollingWindows` (src/eval/loglikelihood.ts), the same ones
 * `loglikelihoodRolling` scores, so the total equals its result. The default stride, max_seq_len positions, gives
 * disjoint windows (lm-evaluation-harness's rolling loglikelihood); a smaller stride gives the first tokens of
 * each window more context at the cost of more passes.
 */
export async function scoreText(model: ScoringModel, text: string, opts: { stride?: number; batchSize?: number } = {}): Promise<TextScore> {
  const ids = model.tokenizer.encode(text);
  if (ids.length === 0) throw new UserError('score: the text is empty (no tokens to score)');
  const stride = opts.stride ?? model.maxSeqLen - 1;
  const tokens = [model.tokenizer.eos, ...ids];
  const windows = rollingWindows(ids.length, model.maxSeqLen, stride);
  const scores = await scoreInBatches(model, windows.map((w) => tokens.slice(w.start, w.end)), {
    batchSize: opts.batchSize ?? DEFAULT_EVAL_BATCH_SIZE,
    from: windows.map(windowFrom),
  });
  const logprobs = new Float64Array(ids.length);
  // Each window's scores are of its new tokens, token-list positions scoreFrom..end-1 (text token t - 1).
  windows.forEach((w, i) => logprobs.set(scores[i].logprobs, w.scoreFrom - 1));
  const total = logprobs.reduce((a, b) => a + b, 0);
  return {
    n_tokens: ids.length,
    tokens: ids.map((id, index) => ({ index, id, text: model.tokenizer.decode([id]), logprob: logprobs[index] })),
    total_logprob: total,
    mean_logprob: total / ids.length,
    perplexity: perplexity(total, ids.length),
    windows: windows.length,
    stride,
  };
}

/** A token as one table cell: quoted and escaped, and a lone byte of a multi-byte character as <0xHH>. */
function tokenLabel(token: TokenLogprob, tokenizer: string): string {
  if (tokenizer === 'byte' && token.id >= 0x80 && token.id < 0x100) return `<0x${token.id.toString(16).toUpperCase()}>`;
  return JSON.stringify(token.text);
}

/** The human form of `scoreText`: one row per token, then the totals and where they came from. */
export function formatTextScore(r: TextScore, source: { ckptDir: string; step: number | null; tokenizer: Tokenizer }): string {
  const lines = ['| # | id | token | logprob |', '| ---: | ---: | --- | ---: |'];
  for (const t of r.tokens) lines.push(`| ${t.index} | ${t.id} | ${tokenLabel(t, source.tokenizer.name)} | ${t.logprob.toFixed(4)} |`);
  const where = `${source.ckptDir}${source.step !== null ? `, step ${source.step}` : ''}, ${r.windows} window${r.windows === 1 ? '' : 's'}`;
  lines.push('', `${r.n_tokens} tokens: total ${r.total_logprob.toFixed(4)}, mean ${r.mean_logprob.toFixed(4)}, perplexity ${r.perplexity.toFixed(3)} (${where})`);
  return lines.join('\n');
}

/**
 * The scoring batch, lowered where the backend cannot bind its logits (batch x window x vocab floats) in one
 * buffer (WebGPU: 2 GiB). Scores do not depend on the batch, so unlike training this adapts instead of refusing.
 */
export function fittingBatch(batch: number, window: number, vocab: number, limit = maxBindingBytes()): number {
  if (!limit) return batch;
  return Math.max(1, Math.min(batch, Math.floor(limit / (window * vocab * 4))));
}

/**
 * The TensorFlow.js engine's `OpenScorer`: the training-form forward pass on the chosen backend, over windows of
 * `window` positions. The checkpoint folder is the scorer's source, named if its weights give NaN.
 */
export function tfjsScorers(backend: BackendName = 'auto'): OpenScorer {
  return async (dir, opts) => {
    await initBackend(backend);
    const model = loadRunModel(dir);
    const batchSize = fittingBatch(opts.batchSize, opts.window, model.spec.vocab);
    const scorer = new TfScoringModel(model, { batchSize, maxSeqLen: opts.window + 1 });
    const readyAt = Date.now();
    return {
      tokenizer: scorer.tokenizer,
      maxSeqLen: scorer.maxSeqLen,
      windowKey: opts.windowKey,
      source: model.ckptDir,
      batchSize,
      scoreSequences: (seqs, from) => scorer.scoreSequences(seqs, from),
      ready: () => Promise.resolve(readyAt),
      dispose: () => model.dispose(),
    };
  };
}
