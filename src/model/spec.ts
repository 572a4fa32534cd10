import { effectiveKeyGroups, effectiveVocab } from '../config/load';
import type { Config, ModelConfig } from '../config/types';
import { tokenizerVocabSize } from '../data/tokenizer';

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
    G: effectiveKeyGroups(m),
    scope: m.qk_norm.scope,
    qkEps: m.qk_norm.eps,
    normEps: m.norm_eps,
    ropeTheta: m.rope_theta,
    maxSeqLen: m.max_seq_len,
    tied: m.tie_embeddings,
    initStd: m.init_std,
  };
}

/**
 * The one way from a config to the model it describes: the vocabulary resolved against the data's tokenizer
 * (`model.vocab_size: 0` sizes it from the tokenizer), key groups resolved (`0`: one per head).
 */
export function configSpec(cfg: Pick<Config, 'model' | 'data'>): ModelSpec {
  return modelSpec(cfg.model, effectiveVocab(cfg.model, tokenizerVocabSize(cfg.data.tokenizer)));
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
