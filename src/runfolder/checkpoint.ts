/**
 * Model checkpoints: `model.safetensors` (float32, Hugging Face DeepSeek-V3 names, `[out, in]` layout) and a
 * `config.json` precise enough to rebuild the forward pass elsewhere (docs/checkpoint-format.md).
 */
import * as fs from 'fs';
import * as path from 'path';
import { VARIANTS, type Variant } from '../config/types';
import { getTokenizer, TOKENIZER_NAMES, type Tokenizer } from '../data/tokenizer';
import { UserError } from '../errors';
import { paramInfos } from '../model/params';
import { writeFileAtomic } from './atomic';
import { dtypeOf, loadSafetensors, saveSafetensors, showName, type StoredTensor } from './safetensors';
import type { ModelSpec } from '../model/spec';
import { hasQkNorm } from '../model/variants';
import { fieldReader, isObject } from './fields';

export const CHECKPOINT_FORMAT = 'mlactl-mla/1';
const ATTENTION_SCALE = '1/sqrt(qk_nope_head_dim + qk_rope_head_dim)';

export interface CheckpointConfigJson {
  model_type: 'mlactl-mla';
  format: string;
  vocab_size: number;
  hidden_size: number;
  num_hidden_layers: number;
  num_attention_heads: number;
  q_lora_rank: number | null;
  kv_lora_rank: number;
  qk_nope_head_dim: number;
  qk_rope_head_dim: number;
  v_head_dim: number;
  intermediate_size: number;
  hidden_act: 'silu';
  rope_theta: number;
  rope_layout: 'adjacent-pairs';
  rms_norm_eps: number;
  max_position_embeddings: number;
  tie_word_embeddings: boolean;
  attention_scale: string;
  variant: ModelSpec['variant'];
  qk_norm: { scope: 'full' | 'nope'; key_groups: number; eps: number; applied: 'before-rope' } | null;
  tokenizer: { name: string; hash: string; eos: number } | null;
  initializer_range: number;
}

export function checkpointConfig(s: ModelSpec, tokenizer: CheckpointConfigJson['tokenizer']): CheckpointConfigJson {
  return {
    model_type: 'mlactl-mla',
    format: CHECKPOINT_FORMAT,
    vocab_size: s.vocab,
    hidden_size: s.d,
    num_hidden_layers: s.L,
    num_attention_heads: s.H,
    q_lora_rank: s.dq > 0 ? s.dq : null,
    kv_lora_rank: s.dc,
    qk_nope_head_dim: s.dn,
    qk_rope_head_dim: s.dr,
    v_head_dim: s.dv,
    intermediate_size: s.dff,
    hidden_act: 'silu',
    rope_theta: s.ropeTheta,
    rope_layout: 'adjacent-pairs',
    rms_norm_eps: s.normEps,
    max_position_embeddings: s.maxSeqLen,
    tie_word_embeddings: s.tied,
    attention_scale: ATTENTION_SCALE,
    variant: s.variant,
    qk_norm: hasQkNorm(s) ? { scope: s.scope, key_groups: s.G, eps: s.qkEps, applied: 'before-rope' } : null,
    tokenizer,
    initializer_range: s.initStd,
  };
}

/**
 * Checks a parsed config.json against the format page: every key of its table present with its type, and the
 * constraints between keys. Refusals name the file and the key (`dir/config.json: num_hidden_layers: missing`).
 * Keys the format does not know are left alone: Hugging Face tools add their own.
 */
export function parseCheckpointConfig(parsed: unknown, source: string): CheckpointConfigJson {
  const { root: raw, fail, shown, get } = fieldReader(parsed, source);
  const positiveInt = (o: Record<string, unknown>, key: string, full = key): number => {
    const v = get(o, key, full);
    return Number.isSafeInteger(v) && (v as number) > 0 ? (v as number) : fail(full, `must be a positive integer, got ${shown(v)}`);
  };
  const positiveNumber = (o: Record<string, unknown>, key: string, full = key): number => {
    const v = get(o, key, full);
    return typeof v === 'number' && Number.isFinite(v) && v > 0 ? v : fail(full, `must be a positive number, got ${shown(v)}`);
  };
  const oneOf = <T extends string>(o: Record<string, unknown>, key: string, values: readonly T[], full = key): T => {
    const v = get(o, key, full);
    if ((values as readonly unknown[]).includes(v)) return v as T;
    return fail(full, `${shown(v)} is not ${values.length === 1 ? shown(values[0]) : `one of ${values.map(shown).join(', ')}`}`);
  };

  oneOf(raw, 'model_type', ['mlactl-mla'] as const);
  oneOf(raw, 'format', [CHECKPOINT_FORMAT]);
  for (const key of ['vocab_size', 'hidden_size', 'num_hidden_layers', 'num_attention_heads', 'kv_lora_rank', 'qk_nope_head_dim']) positiveInt(raw, key);
  if (get(raw, 'q_lora_rank') !== null && !(Number.isSafeInteger(raw.q_lora_rank) && (raw.q_lora_rank as number) > 0)) {
    fail('q_lora_rank', `must be a positive integer or null, got ${shown(raw.q_lora_rank)}`);
  }
  const dr = positiveInt(raw, 'qk_rope_head_dim');
  if (dr % 2 !== 0) fail('qk_rope_head_dim', `must be even (RoPE rotates pairs), got ${dr}`);
  for (const key of ['v_head_dim', 'intermediate_size']) positiveInt(raw, key);
  oneOf(raw, 'hidden_act', ['silu'] as const);
  positiveNumber(raw, 'rope_theta');
  oneOf(raw, 'rope_layout', ['adjacent-pairs'] as const);
  positiveNumber(raw, 'rms_norm_eps');
  positiveInt(raw, 'max_position_embeddings');
  if (typeof get(raw, 'tie_word_embeddings') !== 'boolean') fail('tie_word_embeddings', `must be true or false, got ${shown(raw.tie_word_embeddings)}`);
  // The two informative keys may be left out; stating another value describes a forward pass mlactl does not compute.
  if (raw.attention_scale !== undefined) oneOf(raw, 'attention_scale', [ATTENTION_SCALE]);
  const variant = oneOf<Variant>(raw, 'variant', VARIANTS);
  const qk = get(raw, 'qk_norm');
  if (hasQkNorm({ variant })) {
    if (!isObject(qk)) fail('qk_norm', `must be an object for variant ${variant}, got ${shown(qk)}`);
    const q = qk as Record<string, unknown>;
    oneOf(q, 'scope', ['full', 'nope'] as const, 'qk_norm.scope');
    const G = positiveInt(q, 'key_groups', 'qk_norm.key_groups');
    const H = raw.num_attention_heads as number;
    if (H % G !== 0) fail('qk_norm.key_groups', `must divide num_attention_heads (${H}), got ${G}`);
    positiveNumber(q, 'eps', 'qk_norm.eps');
    if (q.applied !== undefined) oneOf(q, 'applied', ['before-rope'] as const, 'qk_norm.applied');
  } else if (qk !== null) {
    fail('qk_norm', `must be null for variant ${variant}, got ${shown(qk)}`);
  }
  const tok = get(raw, 'tokenizer');
  if (tok !== null) {
    if (!isObject(tok)) fail('tokenizer', `must be an object or null, got ${shown(tok)}`);
    const t = tok as Record<string, unknown>;
    oneOf(t, 'name', TOKENIZER_NAMES, 'tokenizer.name');
    const hash = get(t, 'hash', 'tokenizer.hash');
    if (typeof hash !== 'string' || hash === '') fail('tokenizer.hash', `must be a non-empty string, got ${shown(hash)}`);
    const eos = get(t, 'eos', 'tokenizer.eos');
    if (!Number.isSafeInteger(eos) || (eos as number) < 0) fail('tokenizer.eos', `must be a non-negative integer, got ${shown(eos)}`);
  }
  const init = get(raw, 'initializer_range');
  if (typeof init !== 'number' || !Number.isFinite(init) || init < 0) fail('initializer_range', `must be a non-negative number, got ${shown(init)}`);
  return raw as unknown as CheckpointConfigJson;
}

/**
 * The tokenizer a checkpoint's config.json (`file`) names, for encoding text for that model: refused when config.json
 * names none, or when its hash differs from this build's tokenizer of that name (the ids would not match the model's).
 */
export function checkpointTokenizer(config: CheckpointConfigJson, file: string): Tokenizer {
  if (!config.tokenizer) throw new UserError(`${file}: tokenizer is missing, so text cannot be encoded for this model`);
  const tokenizer = getTokenizer(config.tokenizer.name);
  if (config.tokenizer.hash !== tokenizer.hash) {
    throw new UserError(`${file}: tokenizer.hash differs from this build's ${config.tokenizer.name} tokenizer (its token ids would not match the model's)`);
  }
  return tokenizer;
}

/** A model folder's spec, config.json and tokenizer, from config.json alone (for engines that read the weights themselves). */
export function modelFolderInfo(dir: string): { spec: ModelSpec; config: CheckpointConfigJson; tokenizer: Tokenizer } {
  const file = path.join(dir, 'config.json');
  const config = readCheckpointConfig(file);
  return { spec: specFromCheckpointConfig(config, file), config, tokenizer: checkpointTokenizer(config, file) };
}

/** Reads and checks a config.json file (parseCheckpointConfig). */
export function readCheckpointConfig(file: string): CheckpointConfigJson {
  if (!fs.existsSync(file)) throw new UserError(`${file}: file not found (not a model checkpoint folder)`);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UserError(`${file}: invalid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  return parseCheckpointConfig(raw, file);
}

/** The model's dimensions from a config.json object, which is checked first (`source` names it in refusals). */
export function specFromCheckpointConfig(config: CheckpointConfigJson, source = 'config.json'): ModelSpec {
  const c = parseCheckpointConfig(config, source);
  return {
    variant: c.variant,
    vocab: c.vocab_size,
    d: c.hidden_size,
    L: c.num_hidden_layers,
    H: c.num_attention_heads,
    dq: c.q_lora_rank ?? 0,
    dc: c.kv_lora_rank,
    dn: c.qk_nope_head_dim,
    dr: c.qk_rope_head_dim,
    dv: c.v_head_dim,
    dff: c.intermediate_size,
    G: c.qk_norm?.key_groups ?? c.num_attention_heads,
    scope: c.qk_norm?.scope ?? 'full',
    qkEps: c.qk_norm?.eps ?? 1e-6,
    normEps: c.rms_norm_eps,
    ropeTheta: c.rope_theta,
    maxSeqLen: c.max_position_embeddings,
    tied: c.tie_word_embeddings,
    initStd: c.initializer_range,
  };
}

/** Write a model folder (model.safetensors + config.json) from host copies of every parameter of `s`. */
export function writeModelFolder(dir: string, tensors: Record<string, StoredTensor>, s: ModelSpec, tokenizer: CheckpointConfigJson['tokenizer']): void {
  fs.mkdirSync(dir, { recursive: true });
  const ordered: Record<string, StoredTensor> = {};
  for (const p of paramInfos(s)) ordered[p.name] = tensors[p.name];
  saveSafetensors(path.join(dir, 'model.safetensors'), ordered, { format: CHECKPOINT_FORMAT });
  writeFileAtomic(path.join(dir, 'config.json'), JSON.stringify(checkpointConfig(s, tokenizer), null, 2) + '\n');
}

/**
 * The weights of a model.safetensors for `spec`: exactly the tensors of the format's table, each F32 with its
 * shape. Everything is checked before anything is returned, so a refusal leaves nothing half-loaded.
 */
export function readModelTensors(file: string, spec: ModelSpec): Record<string, Float32Array> {
  const { tensors } = loadSafetensors(file);
  const infos = paramInfos(spec);
  const out: Record<string, Float32Array> = {};
  for (const p of infos) {
    const t = tensors[p.name];
    if (!t) throw new UserError(`${file}: missing tensor ${p.name}`);
    if (t.shape.join(',') !== p.shape.join(',')) throw new UserError(`${file}: tensor ${p.name} has shape [${t.shape}], expected [${p.shape}]`);
    if (!(t.data instanceof Float32Array)) throw new UserError(`${file}: tensor ${p.name} has dtype ${dtypeOf(t.data)}, expected F32`);
    out[p.name] = t.data;
  }
  // The format page: a reader must refuse any other tensor (it would mean another architecture or config).
  const expected = new Set(infos.map((p) => p.name));
  const extra = Object.keys(tensors).sort().find((name) => !expected.has(name));
  if (extra !== undefined) throw new UserError(`${file}: unexpected tensor ${showName(extra)} (not in the checkpoint format's table for this config.json)`);
  return out;
}

/** Read a model folder; config.json and every tensor are checked before anything is returned. */
export function readModelFolder(dir: string): { spec: ModelSpec; weights: Record<string, Float32Array>; config: CheckpointConfigJson } {
  const cfgFile = path.join(dir, 'config.json');
  const config = readCheckpointConfig(cfgFile);
  const spec = specFromCheckpointConfig(config, cfgFile);
  return { spec, weights: readModelTensors(path.join(dir, 'model.safetensors'), spec), config };
}
