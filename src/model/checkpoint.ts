/**
 * Model checkpoints: `model.safetensors` (float32, Hugging Face DeepSeek-V3 names, `[out, in]` layout) and a
 * `config.json` precise enough to rebuild the forward pass elsewhere (docs/checkpoint-format.md).
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors';
import { paramInfos, type Params } from './params';
import { loadSafetensors, saveSafetensors, writeFileAtomic } from './safetensors';
import type { ModelSpec } from './spec';

export const CHECKPOINT_FORMAT = 'mlactl-mla/1';

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
    attention_scale: '1/sqrt(qk_nope_head_dim + qk_rope_head_dim)',
    variant: s.variant,
    qk_norm: s.variant === 'qk-norm' ? { scope: s.scope, key_groups: s.G, eps: s.qkEps, applied: 'before-rope' } : null,
    tokenizer,
    initializer_range: s.initStd,
  };
}

export function specFromCheckpointConfig(c: CheckpointConfigJson): ModelSpec {
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

/** Read every parameter back to host memory (one download per tensor) and write the pair of files. */
export async function saveModel(dir: string, P: Params, s: ModelSpec, tokenizer: CheckpointConfigJson['tokenizer']): Promise<void> {
  fs.mkdirSync(dir, { recursive: true });
  const tensors: Record<string, { shape: number[]; data: Float32Array }> = {};
  for (const p of paramInfos(s)) tensors[p.name] = { shape: p.shape, data: (await P[p.name].data()) as Float32Array };
  saveSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: CHECKPOINT_FORMAT });
  writeFileAtomic(path.join(dir, 'config.json'), JSON.stringify(checkpointConfig(s, tokenizer), null, 2) + '\n');
}

/** Load a model folder; every expected tensor must be present with its exact shape. */
export function loadModel(dir: string): { spec: ModelSpec; params: Record<string, tf.Variable>; config: CheckpointConfigJson } {
  const cfgFile = path.join(dir, 'config.json');
  if (!fs.existsSync(cfgFile)) throw new UserError(`${cfgFile}: file not found (not a model checkpoint folder)`);
  let config: CheckpointConfigJson;
  try {
    config = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
  } catch (e) {
    throw new UserError(`${cfgFile}: invalid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  if (config.model_type !== 'mlactl-mla') throw new UserError(`${cfgFile}: model_type must be mlactl-mla`);
  const spec = specFromCheckpointConfig(config);
  const file = path.join(dir, 'model.safetensors');
  const { tensors } = loadSafetensors(file);
  const params: Record<string, tf.Variable> = {};
  for (const p of paramInfos(spec)) {
    const t = tensors[p.name];
    if (!t) throw new UserError(`${file}: missing tensor ${p.name}`);
    if (t.shape.join(',') !== p.shape.join(',')) throw new UserError(`${file}: tensor ${p.name} has shape [${t.shape}], expected [${p.shape}]`);
    const value = tf.tensor(t.data as Float32Array, p.shape, 'float32');
    params[p.name] = tf.variable(value, true);
    value.dispose();
  }
  return { spec, params, config };
}
