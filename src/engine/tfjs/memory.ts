// What a configuration will allocate, estimated from its sizes alone, and the check that refuses a run whose
// estimate exceeds the machine's memory or the backend's limit before anything is allocated: a size typed one
// order too large would otherwise grow for minutes into swap, or abort half-way and leave a locked run folder.
//
// TensorFlow.js keeps every intermediate tensor of a micro-batch's forward and backward pass alive until the
// gradients are taken, so the activations are counted per op, with coefficients measured on the cpu backend
// (tf.profile's peak bytes; test/config/memory.test.ts re-measures them and keeps the estimate above the peak
// and within 3x of it). The estimate is meant to stop what cannot run, not to predict a run's footprint.

import * as os from 'os';
import { UserError } from '../../errors';
import { modelSpec, type ModelSpec } from '../../model/spec';
import { formatBytes, ropeTableBytes } from '../../config/limits';
import { baseConfig } from '../../config/load';
import type { Config } from '../../config/types';
import { hasQkNorm } from '../../model/variants';

/** The wasm backend's heap is a 32-bit address space: emscripten's getHeapMax() is 4 GiB minus one 64 KiB page. */
export const WASM_HEAP_BYTES = 4 * 2 ** 30 - 2 ** 16;

/** The longest Float32Array V8 allocates (Node 20): every tensor is one on the cpu backend and when read back. */
export const MAX_TENSOR_ELEMENTS = 2 ** 32;

/** src/engine/tfjs/head-loss.ts computes logits whole up to WHOLE_LOGITS_BYTES (256 MiB), in chunks beyond. */
const WHOLE_LOGITS_FLOATS = (256 * 2 ** 20) / 4;

// Floats kept per token of a micro-batch and per unit of a dimension, forward and backward together (measured).
const PER_LAYER = { d: 50, headQK: 48, headV: 16, latent: 20, queryRank: 15, mlp: 19, qkNorm: 20 };
/** Per attention score [B, H, T, T] per layer: scores, scaled, masked, softmax, and their gradients. */
const PER_SCORE = 11;
/** Per logit, when the head's logits are computed whole (log-sum-exp, one-hot product and their gradients). */
const PER_LOGIT = 20;
/** The chunked head's peak, in units of one chunk of logits (measured about 8.5). */
const CHUNKED_HEAD = 10;
/** Per token and model width outside the layers: the embedding lookup, the final norm and their gradients. */
const PER_TOKEN_OUTSIDE = 20;
/** Gradients per weight at the backward pass's peak: the result and the temporaries of matmul gradients (3.6-8). */
const GRADIENT_COPIES = 4;
/** A forward pass alone keeps this share of a training micro-batch's activations (measured about 0.36). */
const FORWARD_SHARE = 0.6;
/**
 * The coefficients above are fitted to the cpu backend's peaks on small models; the other backends keep the same
 * tensors (the tape is TensorFlow.js's own), but kernels differ in what they copy, so the estimate keeps headroom.
 */
const MARGIN = 1.25;

/** Bytes by component; `parameters` is a count. */
export interface TrainingMemory {
  parameters: number;
  weights: number;
  /** The gradients at the backward pass's peak, and their running sum when train.grad_accum > 1. */
  gradients: number;
  /** AdamW's two moments, or one Muon momentum for the hidden matrices (AdamW for the rest). */
  optimizer: number;
  /** Everything the forward and backward pass of one micro-batch keeps, including the logits and the causal masks. */
  activations: number;
  rope: number;
  total: number;
}

export interface InferenceMemory {
  parameters: number;
  weights: number;
  /** One forward pass over a scoring batch, and the per-call copies of split weights. */
  activations: number;
  rope: number;
  total: number;
}

interface Dims {
  spec: ModelSpec;
  B: number;
  T: number;
  gradAccum: number;
  optimizer: 'adamw' | 'muon';
}

function paramCounts(s: ModelSpec): { hidden: number; other: number } {
  const queryWidth = s.H * (s.dn + s.dr);
  const query = s.dq > 0 ? s.dq * s.d + queryWidth * s.dq : queryWidth * s.d;
  const attention = query + (s.dc + s.dr) * s.d + s.H * (s.dn + s.dv) * s.dc + s.d * s.H * s.dv;
  const mlp = 3 * s.dff * s.d;
  const qkNorm = hasQkNorm(s) ? 2 * (s.scope === 'full' ? s.dn + s.dr : s.dn) : 0;
  const norms = 2 * s.d + s.dc + s.dq + qkNorm;
  return { hidden: s.L * (attention + mlp), other: s.vocab * s.d * (s.tied ? 1 : 2) + s.d + s.L * norms };
}

/** Floats alive at the peak of one micro-batch's forward and backward pass (`logitsCap`: the head's chunking). */
function activationFloats(s: ModelSpec, B: number, T: number, logitsCap: number): number {
  const perLayer =
    PER_LAYER.d * s.d +
    PER_LAYER.headQK * s.H * (s.dn + s.dr) +
    PER_LAYER.headV * s.H * s.dv +
    PER_LAYER.latent * (s.dc + s.dr) +
    PER_LAYER.queryRank * s.dq +
    PER_LAYER.mlp * s.dff +
    (hasQkNorm(s) ? PER_LAYER.qkNorm * s.H * (s.dn + s.dr) : 0);
  const N = B * T;
  const logits = N * s.vocab <= logitsCap ? PER_LOGIT * N * s.vocab : CHUNKED_HEAD * logitsCap;
  // Each layer also builds its causal mask [T, T], as a Float32Array and as a tensor.
  const scores = s.L * (PER_SCORE * B * s.H * T * T + 2 * T * T);
  return N * s.L * perLayer + logits + PER_TOKEN_OUTSIDE * N * s.d + scores;
}

function estimateDims(d: Dims): TrainingMemory {
  const { hidden, other } = paramCounts(d.spec);
  const parameters = hidden + other;
  const weights = 4 * parameters;
  const gradients = weights * (MARGIN * GRADIENT_COPIES + (d.gradAccum > 1 ? 1 : 0));
  const optimizer = d.optimizer === 'muon' ? 4 * hidden + 8 * other : 8 * parameters;
  const activations = MARGIN * 4 * activationFloats(d.spec, d.B, d.T, WHOLE_LOGITS_FLOATS);
  const rope = ropeTableBytes(d.spec.maxSeqLen, d.spec.dn, d.spec.dr);
  return { parameters, weights, gradients, optimizer, activations, rope, total: weights + gradients + optimizer + activations + rope };
}

function trainingDims(cfg: Config, vocab: number): Dims {
  return { spec: modelSpec(cfg.model, vocab), B: cfg.train.batch_size, T: cfg.data.seq_len, gradAccum: cfg.train.grad_accum, optimizer: cfg.train.optimizer };
}

/** The memory one training run of `cfg` needs, by component, in bytes; `vocab` is the resolved vocabulary (effectiveVocab). */
export function estimateTrainingMemory(cfg: Config, vocab: number): TrainingMemory {
  return estimateDims(trainingDims(cfg, vocab));
}

/** The memory of scoring `batchSize` sequences of `seqLen` tokens with a model (evaluation, score, verify). */
export function estimateInferenceMemory(spec: ModelSpec, batchSize: number, seqLen: number): InferenceMemory {
  const { hidden, other } = paramCounts(spec);
  const parameters = hidden + other;
  const weights = 4 * parameters;
  // Scoring computes the logits whole; the attention splits its weights per call (the weights' size again).
  const activations = MARGIN * (FORWARD_SHARE * 4 * activationFloats(spec, batchSize, seqLen, Infinity) + weights);
  const rope = ropeTableBytes(spec.maxSeqLen, spec.dn, spec.dr);
  return { parameters, weights, activations, rope, total: weights + activations + rope };
}

/** What holds a backend's tensors, and how much it can: the machine's memory, or less on wasm. */
export function memoryLimit(backendName: string, totalBytes: number = os.totalmem()): { bytes: number; holder: string } {
  if (backendName === 'wasm' && WASM_HEAP_BYTES < totalBytes) return { bytes: WASM_HEAP_BYTES, holder: 'the wasm heap' };
  return { bytes: totalBytes, holder: "this machine's memory" };
}

// ---------------------------------------------------------------------------------------------------------------
// Which key to name

interface SizeKey {
  key: string;
  get(d: Dims): number;
  set(d: Dims, value: number): Dims;
}

const specKey = (key: string, field: 'vocab' | 'd' | 'L' | 'H' | 'dq' | 'dc' | 'dn' | 'dr' | 'dv' | 'dff' | 'maxSeqLen'): SizeKey => ({
  key,
  get: (d) => d.spec[field],
  set: (d, value) => ({ ...d, spec: { ...d.spec, [field]: value } }),
});

const MODEL_KEYS: SizeKey[] = [
  specKey('model.vocab_size', 'vocab'),
  specKey('model.d_model', 'd'),
  specKey('model.n_layers', 'L'),
  specKey('model.n_heads', 'H'),
  specKey('model.q_lora_rank', 'dq'),
  specKey('model.kv_lora_rank', 'dc'),
  specKey('model.qk_nope_head_dim', 'dn'),
  specKey('model.qk_rope_head_dim', 'dr'),
  specKey('model.v_head_dim', 'dv'),
  specKey('model.d_ff', 'dff'),
  specKey('model.max_seq_len', 'maxSeqLen'),
];
const seqLenKey: SizeKey = { key: 'data.seq_len', get: (d) => d.T, set: (d, T) => ({ ...d, T }) };
const batchKey = (key: string): SizeKey => ({ key, get: (d) => d.B, set: (d, B) => ({ ...d, B }) });

/** base.yaml's sizes: what a key is compared with to tell which one is out of the ordinary. */
function referenceDims(): Dims {
  const base = baseConfig();
  return trainingDims(base, 256);
}

/**
 * The key that drives `measure`: the one whose value, brought back to base.yaml's, shrinks it the most (so a
 * typo such as n_layers 1e9 is named, not the width that multiplies it). When no key is above base.yaml's, the
 * one whose halving shrinks it the most.
 */
function drivingKey(measure: (d: Dims) => number, d: Dims, candidates: SizeKey[]): SizeKey {
  const ref = referenceDims();
  const now = measure(d);
  let best = candidates[0];
  let bestRatio = 1;
  for (const k of candidates) {
    const base = k.get(ref);
    if (k.get(d) <= base) continue;
    const ratio = now / measure(k.set(d, base));
    if (ratio > bestRatio) [best, bestRatio] = [k, ratio];
  }
  if (bestRatio > 1 + 1e-9) return best;
  for (const k of candidates) {
    const ratio = now / measure(k.set(d, k.get(d) / 2));
    if (ratio > bestRatio) [best, bestRatio] = [k, ratio];
  }
  return best;
}

/** The largest value of `key` in [1, current) for which `fits` holds, or 0; `fits` must hold at 1 if anywhere. */
function largestFitting(d: Dims, key: SizeKey, fits: (d: Dims) => boolean): number {
  if (!fits(key.set(d, 1))) return 0;
  let lo = 1;
  let hi = key.get(d);
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (fits(key.set(d, mid))) lo = mid;
    else hi = mid;
  }
  return lo;
}

const sequences = (n: number) => `${n} sequence${n === 1 ? '' : 's'}`;

function formatCount(n: number): string {
  if (n < 1e3) return String(n);
  if (n < 1e6) return `${(n / 1e3).toFixed(2)}K`;
  if (n < 1e9) return `${(n / 1e6).toFixed(2)}M`;
  if (n < 1e12) return `${(n / 1e9).toFixed(2)}B`;
  return n.toExponential(2);
}

/** `total`: the bytes are the whole estimate, not only the part `what` names. */
function refuse(key: SizeKey, d: Dims, limit: { bytes: number; holder: string }, what: string, bytes: number, total: boolean, advice?: string): never {
  const tail = advice ?? `${key.key} = ${key.get(d)} drives the size`;
  throw new UserError(
    `${key.key}: ${limit.holder} (${formatBytes(limit.bytes)}) cannot hold ${what} (about ${formatBytes(bytes)}${total ? ' in all' : ''}); ${tail}`,
  );
}

interface Tensor {
  name: string;
  shape: (d: Dims) => number[];
  keys: SizeKey[];
  /** Its first dimension is the batch: a smaller batch is the advice when one sequence fits. */
  batched?: boolean;
}

/** The largest tensors a training step or a forward pass builds, with the keys their dimensions come from. */
function largeTensors(window: SizeKey, logitsCap: number): Tensor[] {
  const [vocab, width, , heads, queryRank, latent, nope, rope, value, ff, positions] = MODEL_KEYS;
  return [
    { name: 'embedding', shape: (d) => [d.spec.vocab, d.spec.d], keys: [vocab, width] },
    { name: 'MLP weight', shape: (d) => [d.spec.dff, d.spec.d], keys: [ff, width] },
    { name: 'query projection', shape: (d) => [d.spec.H * (d.spec.dn + d.spec.dr), d.spec.dq || d.spec.d], keys: [heads, nope, rope, queryRank, width] },
    { name: 'key/value up-projection', shape: (d) => [d.spec.H * (d.spec.dn + d.spec.dv), d.spec.dc], keys: [heads, nope, value, latent] },
    { name: 'RoPE table', shape: (d) => [d.spec.maxSeqLen, d.spec.dn + d.spec.dr], keys: [positions, nope, rope] },
    { name: 'attention scores', shape: (d) => [d.B, d.spec.H, d.T, d.T], keys: [window, heads], batched: true },
    { name: 'MLP activation', shape: (d) => [d.B, d.T, d.spec.dff], keys: [window, ff], batched: true },
    {
      name: 'logits',
      // Past the cap the head works in chunks of rows, each [rows, vocab].
      shape: (d) => (d.B * d.T * d.spec.vocab <= logitsCap ? [d.B, d.T, d.spec.vocab] : [Math.max(1, Math.floor(logitsCap / d.spec.vocab)), d.spec.vocab]),
      keys: [window, vocab],
      batched: true,
    },
  ];
}

function checkTensors(d: Dims, batch: SizeKey, window: SizeKey, logitsCap: number): void {
  for (const t of largeTensors(window, logitsCap)) {
    const elements = (x: Dims) => t.shape(x).reduce((a, b) => a * b, 1);
    if (elements(d) <= MAX_TENSOR_ELEMENTS) continue;
    const smallerBatch = t.batched && d.B > 1 && elements(batch.set(d, 1)) <= MAX_TENSOR_ELEMENTS;
    const key = smallerBatch ? batch : drivingKey(elements, d, t.keys);
    throw new UserError(
      `${key.key}: the ${t.name} of ${t.shape(d).join(' x ')} numbers is larger than one tensor can be (2^32 numbers); ${key.key} = ${key.get(d)} drives the size`,
    );
  }
}

/** The resident part: what stays allocated for the whole run, apart from the transient activations. */
function residentOf(e: TrainingMemory): number {
  const oneGradient = e.weights;
  return e.weights + oneGradient + e.optimizer + e.rope;
}

function residentWhat(e: { parameters: number; rope: number }, resident: number, d: Dims, parts: string): string {
  return e.rope > resident - e.rope
    ? `the RoPE tables of ${d.spec.maxSeqLen} positions`
    : `${parts} of ${formatCount(e.parameters)} parameters`;
}

/**
 * Refuses (UserError naming the key that drives the size) a training run that will not fit: the weights, one
 * gradient and the optimizer state; then a whole micro-batch's step; then any one tensor past the typed-array
 * limit. Call it once the backend and the vocabulary are known and before the model is built. Returns the estimate.
 */
export function checkMemory(cfg: Config, vocab: number, backendName: string, totalBytes: number = os.totalmem()): TrainingMemory {
  const d = trainingDims(cfg, vocab);
  const est = estimateDims(d);
  const limit = memoryLimit(backendName, totalBytes);
  // A vocabulary sized from the tokenizer (0) is not the user's to change, so it is never the key named.
  const modelKeys = MODEL_KEYS.filter((k) => k.key !== 'model.vocab_size' || cfg.model.vocab_size > 0);
  const batch = batchKey('train.batch_size');

  const resident = residentOf(est);
  if (resident > limit.bytes) {
    const key = drivingKey((x) => residentOf(estimateDims(x)), d, modelKeys);
    refuse(key, d, limit, residentWhat(est, resident, d, 'the weights, gradients and optimizer state'), resident, false);
  }
  if (est.total > limit.bytes) {
    const what = `the activations of one micro-batch of ${sequences(d.B)} x ${d.T} tokens`;
    const fits = largestFitting(d, batch, (x) => estimateDims(x).total <= limit.bytes);
    if (fits >= 1) {
      refuse(batch, d, limit, what, est.total, true, `use train.batch_size <= ${fits} and raise train.grad_accum to keep the tokens per step`);
    }
    const key = drivingKey((x) => estimateDims(x).total, batch.set(d, 1), [...modelKeys, seqLenKey]);
    refuse(key, d, limit, what, est.total, true);
  }
  checkTensors(d, batch, seqLenKey, WHOLE_LOGITS_FLOATS);
  return est;
}

/**
 * As checkMemory for scoring `batchSize` sequences of `seqLen` tokens with a loaded model (evaluation, score,
 * verify, generate). `keys` names the settings in the messages: the config's by default, or a command's flags.
 */
export function checkInferenceMemory(
  spec: ModelSpec,
  batchSize: number,
  seqLen: number,
  backendName: string,
  totalBytes: number = os.totalmem(),
  keys: { batch: string; window: string } = { batch: 'eval.batch_size', window: 'data.seq_len' },
): InferenceMemory {
  const d: Dims = { spec, B: batchSize, T: seqLen, gradAccum: 1, optimizer: 'adamw' };
  const estimate = (x: Dims) => estimateInferenceMemory(x.spec, x.B, x.T);
  const est = estimate(d);
  const limit = memoryLimit(backendName, totalBytes);
  const batch = batchKey(keys.batch);
  const windowKey: SizeKey = { ...seqLenKey, key: keys.window };

  const resident = est.weights + est.rope;
  if (resident > limit.bytes) {
    const key = drivingKey((x) => estimate(x).weights + estimate(x).rope, d, MODEL_KEYS);
    refuse(key, d, limit, residentWhat(est, resident, d, 'the weights'), resident, false);
  }
  if (est.total > limit.bytes) {
    const what = `the activations of scoring ${sequences(d.B)} x ${d.T} tokens`;
    const fits = largestFitting(d, batch, (x) => estimate(x).total <= limit.bytes);
    if (fits >= 1) refuse(batch, d, limit, what, est.total, true, `use ${keys.batch} <= ${fits}`);
    const key = drivingKey((x) => estimate(x).total, batch.set(d, 1), [...MODEL_KEYS, windowKey]);
    refuse(key, d, limit, what, est.total, true);
  }
  checkTensors(d, batch, windowKey, Infinity);
  return est;
}
