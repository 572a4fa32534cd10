/**
 * Everything a variant decides, in one table. Code asks the table (`variantOf(s).qkNorm`), never compares variant
 * names, so a fourth variant is one entry here plus whatever new math its entry names. The table is typed as a
 * mapped type over `Variant` (src/config/types.ts): a name added there without an entry here does not compile, and
 * each field's union is switched over exhaustively where it is used.
 */
import type { Variant } from '../config/types';
import type { CacheKind, ModelSpec } from './spec';

/** How a variant's attention transforms queries and keys before RoPE (design note §3). */
export type QkTransform = 'none' | 'qk-norm';

/** What runs after each optimizer step (design note §5). */
export type AfterStep = 'none' | 'qk-clip';

export interface VariantDefinition {
  /** One line for help and reports. */
  summary: string;
  /** `qk-norm` adds the per-layer weights q_norm and k_norm (checkpoint format) and RMSNorm on q and k. */
  qkTransform: QkTransform;
  /** The decode caches that reproduce the training form exactly, cheapest first (the first is the default). */
  caches: readonly [CacheKind, ...CacheKind[]];
  afterStep: AfterStep;
}

export const VARIANT_TABLE: { readonly [V in Variant]: VariantDefinition } = {
  baseline: {
    summary: 'plain MLA (DeepSeek-V2/V3)',
    qkTransform: 'none',
    caches: ['latent', 'full-key'],
    afterStep: 'none',
  },
  'qk-clip': {
    summary: "MLA with Kimi K2's QK-clip: heads whose max logit exceeds tau are rescaled after each step",
    qkTransform: 'none',
    caches: ['latent', 'full-key'],
    afterStep: 'qk-clip',
  },
  'qk-norm': {
    summary: 'QK-Normed MLA: RMSNorm on queries and keys; decodes from the latent plus one inverse RMS per key group',
    // The plain latent cache cannot apply the key statistic; latent+invrms is the paper's cache.
    qkTransform: 'qk-norm',
    caches: ['latent+invrms', 'full-key'],
    afterStep: 'none',
  },
};

export function variantOf(s: Pick<ModelSpec, 'variant'>): VariantDefinition {
  return VARIANT_TABLE[s.variant];
}

/** Whether queries and keys are RMS-normalised (and the layer holds q_norm / k_norm weights). */
export function hasQkNorm(s: Pick<ModelSpec, 'variant'>): boolean {
  const t = variantOf(s).qkTransform;
  switch (t) {
    case 'none':
      return false;
    case 'qk-norm':
      return true;
    default:
      return unreachable(t);
  }
}

/** Which decode caches can serve a variant: plain latent decode cannot apply QK-norm, the paper's cache needs it. */
export function cachesFor(s: Pick<ModelSpec, 'variant'>): CacheKind[] {
  return [...variantOf(s).caches];
}

/** The cache a decoder should use by default: the cheapest exact one. */
export function defaultCache(s: Pick<ModelSpec, 'variant'>): CacheKind {
  return variantOf(s).caches[0];
}

/** Compile-time exhaustiveness: a new member of a union that a switch forgot is a type error at the call. */
export function unreachable(value: never): never {
  throw new Error(`unhandled case ${String(value)}`);
}
