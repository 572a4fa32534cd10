import * as tf from '@tensorflow/tfjs';
import type { ModelSpec } from './spec';
import { qkNormWidth } from './spec';
import { hasQkNorm } from './variants';

/**
 * Parameter names and shapes follow Hugging Face DeepSeek-V3 checkpoints, in PyTorch `[out, in]` layout, so a
 * checkpoint is readable by other tools and QK-clip can scale output rows directly.
 */
export type Params = Record<string, tf.Tensor>;

export interface ParamInfo {
  name: string;
  shape: number[];
  /** Initial value: `normal` draws N(0, std^2); `ones` for norm weights. */
  init: 'normal' | 'ones';
  std: number;
  component: 'embedding' | 'attention' | 'qk-norm' | 'mlp' | 'norm' | 'head';
}

export const layerPrefix = (i: number): string => `model.layers.${i}.`;

export function paramInfos(s: ModelSpec): ParamInfo[] {
  const out: ParamInfo[] = [];
  const std = s.initStd;
  // Residual-branch outputs start smaller so the residual stream's variance does not grow with depth (GPT-2).
  const residualStd = s.initStd / Math.sqrt(2 * s.L);
  const add = (name: string, shape: number[], component: ParamInfo['component'], init: ParamInfo['init'] = 'normal', sd = std) =>
    out.push({ name, shape, init, std: sd, component });
  add('model.embed_tokens.weight', [s.vocab, s.d], 'embedding');
  for (let i = 0; i < s.L; i++) {
    const p = layerPrefix(i);
    add(`${p}input_layernorm.weight`, [s.d], 'norm', 'ones');
    if (s.dq > 0) {
      add(`${p}self_attn.q_a_proj.weight`, [s.dq, s.d], 'attention');
      add(`${p}self_attn.q_a_layernorm.weight`, [s.dq], 'norm', 'ones');
      add(`${p}self_attn.q_b_proj.weight`, [s.H * (s.dn + s.dr), s.dq], 'attention');
    } else {
      add(`${p}self_attn.q_proj.weight`, [s.H * (s.dn + s.dr), s.d], 'attention');
    }
    add(`${p}self_attn.kv_a_proj_with_mqa.weight`, [s.dc + s.dr, s.d], 'attention');
    add(`${p}self_attn.kv_a_layernorm.weight`, [s.dc], 'norm', 'ones');
    add(`${p}self_attn.kv_b_proj.weight`, [s.H * (s.dn + s.dv), s.dc], 'attention');
    add(`${p}self_attn.o_proj.weight`, [s.d, s.H * s.dv], 'attention', 'normal', residualStd);
    if (hasQkNorm(s)) {
      add(`${p}self_attn.q_norm.weight`, [qkNormWidth(s)], 'qk-norm', 'ones');
      add(`${p}self_attn.k_norm.weight`, [qkNormWidth(s)], 'qk-norm', 'ones');
    }
    add(`${p}post_attention_layernorm.weight`, [s.d], 'norm', 'ones');
    add(`${p}mlp.gate_proj.weight`, [s.dff, s.d], 'mlp');
    add(`${p}mlp.up_proj.weight`, [s.dff, s.d], 'mlp');
    add(`${p}mlp.down_proj.weight`, [s.d, s.dff], 'mlp', 'normal', residualStd);
  }
  add('model.norm.weight', [s.d], 'norm', 'ones');
  if (!s.tied) add('lm_head.weight', [s.vocab, s.d], 'head');
  return out;
}

export function countParams(s: ModelSpec): number {
  return paramInfos(s).reduce((n, p) => n + p.shape.reduce((a, b) => a * b, 1), 0);
}

/**
 * Fresh parameters. Values come from TensorFlow.js's seeded generators, which run in JavaScript, so the same
 * seed gives the same initial model on every backend.
 */
export function initParams(s: ModelSpec, seed: number): Record<string, tf.Variable> {
  const vars: Record<string, tf.Variable> = {};
  paramInfos(s).forEach((p, idx) => {
    const value = tf.tidy(() =>
      p.init === 'ones' ? tf.ones(p.shape) : tf.randomNormal(p.shape, 0, p.std, 'float32', seed * 1000003 + idx * 7919 + 17),
    );
    vars[p.name] = tf.variable(value, true);
    value.dispose();
  });
  return vars;
}

export function disposeParams(p: Params): void {
  for (const t of Object.values(p)) t.dispose();
}

/** The output head, which is the embedding itself when tied. */
export function headWeight(p: Params): tf.Tensor2D {
  return (p['lm_head.weight'] ?? p['model.embed_tokens.weight']) as tf.Tensor2D;
}
