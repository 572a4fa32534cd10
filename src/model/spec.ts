import type { ModelConfig } from '../config/types';
import { variantOf } from './variants';

/**
 * The model's dimensions with the short names of the design note (`shared/design/mla-math.md`):
 * d, H, dc, dn, dr, dv, dq (query low-rank, 0 = none), G (key groups). `vocab` is resolved (> 0).
 */
export interface ModelSpec {
  variant: ModelConfig['variant'];
  vocab: number;
  d: number;
  L: number;
  H: number;
  dq: number;
  dc: number;
  dn: number;
  dr: number;
  dv: number;
  dff: number;
  G: number;
  scope: 'full' | 'nope';
  qkEps: number;
  normEps: number;
  ropeTheta: number;
  maxSeqLen: number;
  tied: boolean;
  initStd: number;
}

export function modelSpec(m: ModelConfig, vocab = m.vocab_size): ModelSpec {
  if (!(vocab > 0)) throw new Error('modelSpec: vocabulary size must be resolved (> 0) before building the model');
  return {
    variant: m.variant,
    vocab,
    d: m.d_model,
    L: m.n_layers,
    H: m.n_heads,
    dq: m.q_lora_rank,
    dc: m.kv_lora_rank,
    dn: m.qk_nope_head_dim,
    dr: m.qk_rope_head_dim,
    dv: m.v_head_dim,
    dff: m.d_ff,
    G: m.qk_norm.key_groups > 0 ? m.qk_norm.key_groups : m.n_heads,
    scope: m.qk_norm.scope,
    qkEps: m.qk_norm.eps,
    normEps: m.norm_eps,
    ropeTheta: m.rope_theta,
    maxSeqLen: m.max_seq_len,
    tied: m.tie_embeddings,
    initStd: m.init_std,
  };
}

/** Width of the QK-norm weights: the whole head (dn+dr) for scope `full`, the content slice for `nope`. */
export function qkNormWidth(s: ModelSpec): number {
  return s.scope === 'full' ? s.dn + s.dr : s.dn;
}

/** Softmax temperature: always the training-form head width, also in the absorbed decode (design note §2). */
export function attentionScale(s: ModelSpec): number {
  return 1 / Math.sqrt(s.dn + s.dr);
}

export type CacheKind = 'latent' | 'latent+invrms' | 'full-key';
export const CACHE_KINDS: readonly CacheKind[] = ['latent', 'latent+invrms', 'full-key'];

/** Which decode caches can serve a variant: plain latent decode cannot apply QK-norm, the paper's cache needs it. */
export function cachesFor(s: ModelSpec): CacheKind[] {
  return [...variantOf(s).caches];
}

/** The cache a decoder should use by default: the cheapest exact one. */
export function defaultCache(s: ModelSpec): CacheKind {
  return variantOf(s).caches[0];
}

/** Numbers stored per token per layer by each cache (design note §2, §4). */
export function cacheNumbersPerToken(s: ModelSpec, kind: CacheKind): number {
  switch (kind) {
    case 'latent':
      return s.dc + s.dr;
    case 'latent+invrms':
      return s.dc + s.dr + s.G;
    case 'full-key':
      // Normalised, rotated keys of every head, plus the latent for the (absorbed) values.
      return s.H * (s.dn + s.dr) + s.dc;
  }
}
