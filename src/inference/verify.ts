/**
 * `mlactl verify`: run one token sequence through every form of the model that must agree (the training form,
 * each decode cache the variant has, and for small models the float64 reference) and report the largest relative
 * logit error of each pair against a tolerance. It is the check that the absorbed decode of design note §2/§4
 * is exact on this model, this backend and these weights, not only on the unit tests' toy shapes.
 */
import * as tf from '@tensorflow/tfjs';
import type { Config, EngineConfig } from '../config/types';
import { UserError } from '../errors';
import { configSpec } from '../model/spec';
import { RopeTables } from '../model/layers';
import { countParams, disposeParams, initParams, paramInfos, type Params } from '../model/params';
import { maxRelativeError, referenceForward, type RefWeights } from '../model/reference';
import { loadRunModel, resolveModelFolder } from './scoring';
import type { CacheKind, ModelSpec } from '../model/spec';
import { cachesFor } from '../model/variants';
import { forward, IncrementalDecoder } from '../model/transformer';
import { runTorchCommand } from '../engine/torch/decode';
import { modelFolderInfo } from '../runfolder/checkpoint';

export const DEFAULT_VERIFY_TOLERANCE = 1e-5;
export const DEFAULT_VERIFY_TOKENS = 16;
/** Below this many parameters the float64 reference (plain JavaScript loops) takes well under a second per token. */
export const REFERENCE_PARAM_LIMIT = 5_000_000;

export interface VerifyOptions {
  tolerance?: number;
  /** Length of the test sequence; the decoders prefill half of it and then take one token at a time. */
  tokens?: number;
  /** Seeds the test sequence's token ids. */
  tokenSeed?: number;
  referenceParamLimit?: number;
}

export interface LogitsComparison {
  /** `<form> vs <against>`, e.g. `latent+invrms vs training`. */
  pair: string;
  form: string;
  against: string;
  /** max |form - against| / max |against| over every position and vocabulary entry. */
  max_rel_error: number;
  pass: boolean;
}

export interface VerifyReport {
  variant: ModelSpec['variant'];
  parameters: number;
  tokens: number;
  prefill: number;
  tolerance: number;
  forms: string[];
  /** Why the float64 reference was or was not run. */
  reference: { run: boolean; note: string };
  comparisons: LogitsComparison[];
  pass: boolean;
}

export type VerifyForm = 'training' | CacheKind | 'reference';

/** Deterministic token ids in 0..vocab-1 (xorshift32): any id exercises the same code, so no tokenizer is needed. */
export function verifyTokens(n: number, vocab: number, seed: number): number[] {
  let x = (seed * 2654435761 + 1) >>> 0 || 1;
  return Array.from({ length: n }, () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x % vocab;
  });
}

/**
 * A fresh model for checking a config: the config's seeded initialisation, then every norm weight drawn from
 * U(0.5, 1.5). At initialisation all norm weights are exactly 1, and the latent+invrms cache folds the QK-norm
 * weights into other tensors (gk_n ⊙ gq_n into the absorbed query, gk_p into the cached positional key, §4):
 * with weights of 1 a missing or misplaced fold multiplies by one and goes unnoticed. The same holds for the
 * latent norm and the query low-rank norm, which the absorbed decode reuses.
 */
export function verificationParams(s: ModelSpec, seed: number): Record<string, tf.Variable> {
  const P = initParams(s, seed);
  paramInfos(s).forEach((p, index) => {
    if (p.init !== 'ones') return;
    const value = tf.tidy(() => tf.randomUniform(p.shape, 0.5, 1.5, 'float32', seed * 7727 + index * 31 + 5));
    P[p.name].assign(value);
    value.dispose();
  });
  return P;
}

async function trainingLogits(P: Params, s: ModelSpec, rope: RopeTables, tokens: number[]): Promise<Float32Array> {
  const logits = tf.tidy(() => forward(P, s, rope, tf.tensor2d([tokens], [1, tokens.length], 'int32')).logits); // [1, T, V]
  try {
    return (await logits.data()) as Float32Array;
  } finally {
    logits.dispose();
  }
}

/** Logits [T * V] from a decoder: a prefill of the first `prefill` tokens, then one token per call. */
async function decodeLogits(P: Params, s: ModelSpec, rope: RopeTables, kind: CacheKind, tokens: number[], prefill: number): Promise<Float32Array> {
  const out = new Float32Array(tokens.length * s.vocab);
  const decoder = new IncrementalDecoder(P, s, rope, kind);
  try {
    const chunks: number[][] = [tokens.slice(0, prefill), ...tokens.slice(prefill).map((t) => [t])];
    let at = 0;
    for (const chunk of chunks) {
      const input = tf.tensor2d([chunk], [1, chunk.length], 'int32');
      const logits = decoder.feed(input); // [1, n, V]
      input.dispose();
      try {
        out.set((await logits.data()) as Float32Array, at * s.vocab);
      } finally {
        logits.dispose();
      }
      at += chunk.length;
    }
  } finally {
    decoder.dispose();
  }
  return out;
}

async function referenceLogits(P: Params, s: ModelSpec, tokens: number[]): Promise<Float64Array> {
  const W: RefWeights = {};
  for (const p of paramInfos(s)) W[p.name] = Float64Array.from((await P[p.name].data()) as Float32Array);
  return Float64Array.from(referenceForward(W, s, tokens).logits.flat());
}

/** Compare every applicable form of one model on `tokens`. The caller owns P and rope. */
export async function verifyModel(P: Params, s: ModelSpec, rope: RopeTables, tokens: number[], opts: VerifyOptions = {}): Promise<VerifyReport> {
  const tolerance = opts.tolerance ?? DEFAULT_VERIFY_TOLERANCE;
  const limit = opts.referenceParamLimit ?? REFERENCE_PARAM_LIMIT;
  if (tokens.length < 2 || tokens.length > s.maxSeqLen) throw new UserError(`--tokens: need 2..${s.maxSeqLen} (max_seq_len) tokens, got ${tokens.length}`);
  const prefill = Math.floor(tokens.length / 2);
  const parameters = countParams(s);

  const logits = new Map<VerifyForm, ArrayLike<number>>();
  logits.set('training', await trainingLogits(P, s, rope, tokens));
  const caches = cachesFor(s);
  for (const kind of caches) logits.set(kind, await decodeLogits(P, s, rope, kind, tokens, prefill));
  const useReference = parameters < limit;
  if (useReference) logits.set('reference', await referenceLogits(P, s, tokens));

  const pairs: [VerifyForm, VerifyForm][] = [
    ...(useReference ? (['training', ...caches] as VerifyForm[]).map((f): [VerifyForm, VerifyForm] => [f, 'reference']) : []),
    ...caches.map((k): [VerifyForm, VerifyForm] => [k, 'training']),
  ];
  const comparisons = pairs.map(([form, against]) => {
    const err = maxRelativeError(logits.get(form)!, logits.get(against)!);
    // A NaN error must fail, which `err <= tolerance` does and `!(err > tolerance)` would not.
    return { pair: `${form} vs ${against}`, form, against, max_rel_error: err, pass: err <= tolerance };
  });
  return {
    variant: s.variant,
    parameters,
    tokens: tokens.length,
    prefill,
    tolerance,
    forms: [...logits.keys()],
    reference: {
      run: useReference,
      note: useReference
        ? `float64 reference run (${parameters} parameters < ${limit})`
        : `float64 reference skipped: ${parameters} parameters >= ${limit} would take too long in plain JavaScript`,
    },
    comparisons,
    pass: comparisons.every((c) => c.pass),
  };
}

export interface VerifySourceReport extends VerifyReport {
  /** The config file or model folder that was checked. */
  source: string;
  /** Training step of a checkpoint, null for a config's fresh model or an unnamed model folder. */
  step: number | null;
}

/** Check a config's freshly initialised model (norm weights perturbed, see `verificationParams`). */
export async function verifyConfig(cfg: Config, source: string, opts: VerifyOptions = {}): Promise<VerifySourceReport> {
  const s = configSpec(cfg);
  const P = verificationParams(s, cfg.seed);
  const rope = new RopeTables(s.dr, s.maxSeqLen, s.ropeTheta, [0, s.dn]);
  try {
    const tokens = verifyTokens(opts.tokens ?? Math.min(DEFAULT_VERIFY_TOKENS, s.maxSeqLen), s.vocab, opts.tokenSeed ?? cfg.seed);
    return { source, step: null, ...(await verifyModel(P, s, rope, tokens, opts)) };
  } finally {
    disposeParams(P);
    rope.dispose();
  }
}

/** Check a trained checkpoint (a run folder's newest, or `step`), on token ids its tokenizer can produce. */
export async function verifyCheckpoint(dir: string, opts: VerifyOptions & { step?: number } = {}): Promise<VerifySourceReport> {
  const model = loadRunModel(dir, { step: opts.step });
  try {
    const s = model.spec;
    const tokens = verifyTokens(opts.tokens ?? Math.min(DEFAULT_VERIFY_TOKENS, s.maxSeqLen), model.tokenizer.vocabSize, opts.tokenSeed ?? 0);
    return { source: model.ckptDir, step: model.step, ...(await verifyModel(model.params, s, model.rope, tokens, opts)) };
  } finally {
    model.dispose();
  }
}

/**
 * The torch engine's float64 reference is the training form of a float64 copy of the model (PyTorch, not plain
 * JavaScript loops), so it runs for much larger models.
 */
export const TORCH_REFERENCE_PARAM_LIMIT = 500_000_000;

/**
 * `verify --engine torch`: the same comparisons (python -m mlactl_torch verify), on the same test tokens, for a
 * config's fresh model (its seeded init, norm gains drawn from U(0.5, 1.5)) or a checkpoint. On CUDA the fused
 * Triton decode kernel's forms are checked too when it runs there.
 */
export async function verifyWithTorch(
  settings: EngineConfig,
  source: { config: Config; file: string } | { run: string; step?: number },
  opts: VerifyOptions = {},
): Promise<VerifySourceReport & { device: string }> {
  const tolerance = opts.tolerance ?? DEFAULT_VERIFY_TOLERANCE;
  const limit = opts.referenceParamLimit ?? TORCH_REFERENCE_PARAM_LIMIT;
  let args: string[];
  let tokens: number[];
  let where: { source: string; step: number | null };
  if ('config' in source) {
    const s = configSpec(source.config);
    tokens = verifyTokens(opts.tokens ?? Math.min(DEFAULT_VERIFY_TOKENS, s.maxSeqLen), s.vocab, opts.tokenSeed ?? source.config.seed);
    args = ['--spec', JSON.stringify(s), '--seed', String(source.config.seed)];
    where = { source: source.file, step: null };
  } else {
    const folder = resolveModelFolder(source.run, source.step);
    const { spec, tokenizer } = modelFolderInfo(folder.dir);
    tokens = verifyTokens(opts.tokens ?? Math.min(DEFAULT_VERIFY_TOKENS, spec.maxSeqLen), tokenizer.vocabSize, opts.tokenSeed ?? 0);
    if (tokens.length < 2 || tokens.length > spec.maxSeqLen) throw new UserError(`--tokens: need 2..${spec.maxSeqLen} (max_seq_len) tokens, got ${tokens.length}`);
    args = ['--model', folder.dir];
    where = { source: folder.dir, step: folder.step };
  }
  const { event: _event, ...r } = await runTorchCommand<VerifyReport & { device: string; event: string }>(settings, [
    'verify', ...args, '--tokens', tokens.join(','), '--tolerance', String(tolerance), '--reference-param-limit', String(limit),
  ]);
  return { ...where, ...r };
}

/** The human form: one row per pair. */
export function formatVerifyReport(r: VerifySourceReport, backend?: string): string {
  const tolerance = r.tolerance === 0 ? '0' : r.tolerance.toExponential();
  const lines = [
    `${r.source}${r.step !== null ? ` (step ${r.step})` : ''}: ${r.variant}, ${r.parameters} parameters, ${r.tokens} tokens (prefill ${r.prefill}, then 1 at a time)${backend ? `, backend ${backend}` : ''}`,
    r.reference.note,
    '',
    '| comparison | max relative logit error | tolerance | result |',
    '| --- | ---: | ---: | --- |',
    ...r.comparisons.map((c) => `| ${c.pair} | ${c.max_rel_error.toExponential(2)} | ${tolerance} | ${c.pass ? 'ok' : 'FAIL'} |`),
  ];
  return lines.join('\n');
}
