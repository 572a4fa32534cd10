/**
 * Text generation: pure sampling functions (temperature, top-k, top-p over one logits vector, tested alone) and a
 * loop that feeds a prompt through an incremental decoder with the cache that matches the model's variant.
 */
import { performance } from 'perf_hooks';
import * as tf from '@tensorflow/tfjs';
import { Rng } from '../data/rng';
import type { Tokenizer } from '../data/tokenizer';
import { UserError } from '../errors';
import type { RopeTables } from '../model/layers';
import type { Params } from '../model/params';
import { CACHE_KINDS, type CacheKind, type ModelSpec } from '../model/spec';
import { cachesFor, defaultCache } from '../model/variants';
import { IncrementalDecoder } from '../model/transformer';
import type { EngineConfig } from '../config/types';
import { torchGenerate } from '../engine/torch/decode';

export interface SamplingOptions {
  /** Divides the logits; 0 means greedy (always the most likely token). */
  temperature: number;
  /** Keep only the k most likely tokens; 0 keeps all. */
  topK: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p; 1 keeps all. */
  topP: number;
}

export const DEFAULT_SAMPLING: SamplingOptions = { temperature: 1, topK: 0, topP: 1 };

export function validateSampling(o: SamplingOptions): void {
  if (!(o.temperature >= 0) || !Number.isFinite(o.temperature)) throw new UserError(`--temperature: must be a number >= 0, got ${o.temperature}`);
  if (!Number.isInteger(o.topK) || o.topK < 0) throw new UserError(`--top-k: must be an integer >= 0 (0 keeps all tokens), got ${o.topK}`);
  if (!(o.topP > 0 && o.topP <= 1)) throw new UserError(`--top-p: must be in (0, 1] (1 keeps all tokens), got ${o.topP}`);
}

/** Token ids from most to least likely; equal probabilities keep the lower id first, so filters are deterministic. */
function rankByProbability(probs: Float64Array): number[] {
  return Array.from(probs.keys()).sort((a, b) => probs[b] - probs[a] || a - b);
}

function renormalised(probs: Float64Array, keep: number[]): Float64Array {
  const out = new Float64Array(probs.length);
  let total = 0;
  for (const i of keep) total += probs[i];
  for (const i of keep) out[i] = probs[i] / total;
  return out;
}

/** softmax(logits / T) in float64. A logit of -Infinity (a masked id) gets probability 0. */
export function softmaxWithTemperature(logits: ArrayLike<number>, temperature: number): Float64Array {
  if (!(temperature > 0)) throw new Error('softmaxWithTemperature: temperature must be > 0 (0 is greedy: use greedyToken)');
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) max = Math.max(max, logits[i]);
  const out = new Float64Array(logits.length);
  let total = 0;
  for (let i = 0; i < logits.length; i++) {
    out[i] = logits[i] === -Infinity ? 0 : Math.exp((logits[i] - max) / temperature);
    total += out[i];
  }
  for (let i = 0; i < out.length; i++) out[i] /= total;
  return out;
}

/** The most likely id (the lowest on ties). */
export function greedyToken(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i] > logits[best]) best = i;
  return best;
}

/** Keep the k most likely tokens and renormalise; k = 0 or k >= vocabulary keeps all. */
export function topKFilter(probs: Float64Array, k: number): Float64Array {
  if (k <= 0 || k >= probs.length) return probs.slice();
  return renormalised(probs, rankByProbability(probs).slice(0, k));
}

/** Nucleus filter: the smallest set of most likely tokens whose total reaches p (at least one token), renormalised. */
export function topPFilter(probs: Float64Array, p: number): Float64Array {
  if (p >= 1) return probs.slice();
  const keep: number[] = [];
  let cumulative = 0;
  for (const i of rankByProbability(probs)) {
    if (keep.length > 0 && cumulative >= p) break;
    keep.push(i);
    cumulative += probs[i];
  }
  return renormalised(probs, keep);
}

/** The distribution a token is drawn from: temperature, then top-k, then top-p. Temperature 0 is one-hot (greedy). */
export function samplingDistribution(logits: ArrayLike<number>, o: SamplingOptions): Float64Array {
  if (o.temperature === 0) {
    const out = new Float64Array(logits.length);
    out[greedyToken(logits)] = 1;
    return out;
  }
  return topPFilter(topKFilter(softmaxWithTemperature(logits, o.temperature), o.topK), o.topP);
}

/** Inverse-CDF draw: the first id whose cumulative probability exceeds u, for u uniform in [0, 1). */
export function drawFrom(probs: Float64Array, u: number): number {
  let cumulative = 0;
  let lastPossible = 0;
  for (let i = 0; i < probs.length; i++) {
    if (probs[i] <= 0) continue;
    cumulative += probs[i];
    lastPossible = i;
    if (cumulative > u) return i;
  }
  return lastPossible; // rounding left the total a hair below u
}

export function sampleToken(logits: ArrayLike<number>, o: SamplingOptions, rng: Rng): number {
  if (o.temperature === 0) return greedyToken(logits);
  return drawFrom(samplingDistribution(logits, o), rng.nextFloat());
}

// ---------------------------------------------------------------------------------------------------------------

export interface GenerationModel {
  spec: ModelSpec;
  params: Params;
  rope: RopeTables;
  tokenizer: Tokenizer;
}

export interface GenerateOptions {
  maxTokens: number;
  sampling: SamplingOptions;
  seed: number;
  /** Default: the cheapest exact cache for the variant (latent+invrms for qk-norm, latent otherwise). */
  cache?: string;
  /** Receives decoded text as it becomes complete (a character split across tokens waits for its last byte). */
  onText?: (text: string) => void;
}

export interface GenerateResult {
  promptTokens: number[];
  /** Generated ids, including a final end-of-text id when generation stopped there. */
  tokens: number[];
  text: string;
  cache: CacheKind;
  /** Layer 0's cache tensors at the end: name -> shape. */
  cacheShapes: Record<string, number[]>;
  stopped: 'eos' | 'max-tokens';
  prefillMs: number;
  /** Mean time of a decode step (one token through every layer, logits read back); null with fewer than 2 tokens. */
  msPerToken: number | null;
  totalMs: number;
}

/** A cache named on the command line, checked against the variant. */
export function resolveCache(name: string | undefined, s: ModelSpec): CacheKind {
  if (name === undefined) return defaultCache(s);
  if (!(CACHE_KINDS as readonly string[]).includes(name)) throw new UserError(`--cache: unknown cache "${name}" (choose from ${CACHE_KINDS.join(', ')})`);
  const kind = name as CacheKind;
  if (!cachesFor(s).includes(kind)) throw new UserError(`--cache ${kind}: cannot serve a ${s.variant} model (use ${cachesFor(s).join(' or ')})`);
  return kind;
}

/** Emits the decoded text as it grows, holding back a trailing replacement character (an incomplete UTF-8 tail). */
class TextStream {
  private emitted = '';
  constructor(private tokenizer: Tokenizer, private sink?: (text: string) => void) {}

  update(ids: number[], final: boolean): string {
    const text = this.tokenizer.decode(ids);
    const ready = final || !text.endsWith('\uFFFD') ? text : text.slice(0, -1);
    if (ready.startsWith(this.emitted) && ready.length > this.emitted.length) {
      this.sink?.(ready.slice(this.emitted.length));
      this.emitted = ready;
    }
    return text;
  }
}

/**
 * Generate up to `maxTokens` tokens after `prompt` (an empty prompt starts from the end-of-text id, which precedes
 * every document in training). Seeded: the same seed, model and options give the same tokens.
 */
/** The prompt's token ids (eos for an empty prompt), refused when they and `maxTokens` new ones exceed max_seq_len. */
export function promptTokensFor(s: ModelSpec, tok: Tokenizer, prompt: string, maxTokens: number): number[] {
  if (!Number.isInteger(maxTokens) || maxTokens < 1) throw new UserError(`--max-tokens: must be a positive integer, got ${maxTokens}`);
  const promptTokens = prompt === '' ? [tok.eos] : tok.encode(prompt);
  // Every token but the last generated one is fed, so positions run to prompt + maxTokens - 2.
  if (promptTokens.length + maxTokens - 1 > s.maxSeqLen) {
    throw new UserError(
      `--max-tokens ${maxTokens}: the prompt's ${promptTokens.length} tokens plus ${maxTokens} new ones exceed the model's max_seq_len ${s.maxSeqLen} (at most ${Math.max(0, s.maxSeqLen - promptTokens.length + 1)} new tokens)`,
    );
  }
  return promptTokens;
}

export async function generate(model: GenerationModel, prompt: string, o: GenerateOptions): Promise<GenerateResult> {
  validateSampling(o.sampling);
  if (!Number.isInteger(o.maxTokens) || o.maxTokens < 1) throw new UserError(`--max-tokens: must be a positive integer, got ${o.maxTokens}`);
  const s = model.spec;
  const kind = resolveCache(o.cache, s);
  const tok = model.tokenizer;
  const promptTokens = promptTokensFor(s, tok, prompt, o.maxTokens);
  const rng = Rng.fromSeed(o.seed);
  const decoder = new IncrementalDecoder(model.params, s, model.rope, kind);
  const stream = new TextStream(tok, o.onText);
  const tokens: number[] = [];
  let stopped: GenerateResult['stopped'] = 'max-tokens';
  const start = performance.now();
  let prefillMs = 0;
  try {
    let input = promptTokens;
    for (let i = 0; i < o.maxTokens; i++) {
      const t0 = performance.now();
      const logits = tf.tidy(() => {
        const all = decoder.feed(tf.tensor2d([input], [1, input.length], 'int32')); // [1, n, V]
        return all.slice([0, input.length - 1, 0], [1, 1, -1]).reshape([-1]);
      });
      const values = Float64Array.from(await logits.data());
      logits.dispose();
      // Ids the tokenizer cannot decode (the embedding table is rounded up) are never drawn.
      for (let id = tok.vocabSize; id < values.length; id++) values[id] = -Infinity;
      const next = sampleToken(values, o.sampling, rng);
      if (i === 0) prefillMs = performance.now() - t0;
      tokens.push(next);
      if (next === tok.eos) {
        stopped = 'eos';
        break;
      }
      stream.update(tokens, false);
      input = [next];
    }
    const text = stream.update(tokens.filter((t) => t !== tok.eos), true);
    const totalMs = performance.now() - start;
    const steps = tokens.length - 1;
    return {
      promptTokens,
      tokens,
      text,
      cache: kind,
      cacheShapes: decoder.cacheShapes(0),
      stopped,
      prefillMs,
      msPerToken: steps > 0 ? (totalMs - prefillMs) / steps : null,
      totalMs,
    };
  } finally {
    decoder.dispose();
  }
}

/**
 * Greedy generation through the torch engine (python -m mlactl_torch generate): the same prompt handling, cache
 * choice and result as `generate` with temperature 0; the text is shown when complete rather than streamed.
 */
export async function generateWithTorch(
  settings: EngineConfig,
  model: { dir: string; spec: ModelSpec; tokenizer: Tokenizer },
  prompt: string,
  o: Omit<GenerateOptions, 'sampling' | 'seed'>,
): Promise<GenerateResult & { attention: 'torch' | 'fused'; device: string }> {
  const kind = resolveCache(o.cache, model.spec);
  const tok = model.tokenizer;
  const promptTokens = promptTokensFor(model.spec, tok, prompt, o.maxTokens);
  const r = await torchGenerate(settings, model.dir, promptTokens, { maxTokens: o.maxTokens, cache: kind, eos: tok.eos, vocabLimit: tok.vocabSize });
  const text = tok.decode(r.tokens.filter((t) => t !== tok.eos));
  o.onText?.(text);
  return {
    promptTokens,
    tokens: r.tokens,
    text,
    cache: kind,
    cacheShapes: r.cache_shapes,
    stopped: r.stopped,
    prefillMs: r.prefill_ms,
    msPerToken: r.ms_per_token,
    totalMs: r.total_ms,
    attention: r.attention,
    device: r.device,
  };
}
