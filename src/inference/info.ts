/**
 * What a model configuration costs: parameters by component, FLOPs per token, and decode-cache memory for each
 * cache kind. Everything is computed from the shapes (no tensors), so it is instant even for large presets.
 */
import { paramInfos, type ParamInfo } from '../model/params';
import type { CacheKind, ModelSpec } from '../model/spec';
import { CACHE_KINDS, cacheNumbersPerToken } from '../model/spec';
import { cachesFor } from '../model/variants';

export const CACHE_CONTEXTS = [4096, 32768, 262144] as const;
const FLOAT32_BYTES = 4;

export interface ParameterCounts {
  embedding: number;
  attention: number;
  qk_norm: number;
  mlp: number;
  norms: number;
  /** The untied output head (0 when tied to the embedding). */
  head: number;
  total: number;
  /** Everything but the token embedding and the untied head (Kaplan et al. 2020's N). */
  non_embedding: number;
}

export interface FlopsPerToken {
  /** The sequence length the attention term is counted at. */
  seq_len: number;
  /** 2 x the weights every token multiplies (every matmul weight, plus the head even when tied). */
  matmul: number;
  /** Scores and weighted values: 2 L H T (dn + dr + dv). */
  attention: number;
  forward: number;
  /** 3 x forward: the backward pass costs twice the forward (gradients for activations and for weights). */
  training: number;
}

export interface CacheInfo {
  kind: CacheKind;
  /** Whether this cache serves the configured variant (`cachesFor`). */
  applicable: boolean;
  numbers_per_token_per_layer: number;
  /** float32 */
  bytes_per_token_per_layer: number;
  /** One sequence, all layers, at each context length of CACHE_CONTEXTS. */
  total_bytes: { context: number; bytes: number }[];
}

export interface ModelInfo {
  variant: ModelSpec['variant'];
  dims: {
    vocab: number; d_model: number; n_layers: number; n_heads: number; q_lora_rank: number; kv_lora_rank: number;
    qk_nope_head_dim: number; qk_rope_head_dim: number; v_head_dim: number; d_ff: number; key_groups: number; tied: boolean;
  };
  parameters: ParameterCounts;
  flops_per_token: FlopsPerToken;
  kv_cache: CacheInfo[];
}

const size = (p: ParamInfo) => p.shape.reduce((a, b) => a * b, 1);

export function parameterCounts(s: ModelSpec): ParameterCounts {
  const by: Record<ParamInfo['component'], number> = { embedding: 0, attention: 0, 'qk-norm': 0, mlp: 0, norm: 0, head: 0 };
  for (const p of paramInfos(s)) by[p.component] += size(p);
  const total = Object.values(by).reduce((a, b) => a + b, 0);
  return {
    embedding: by.embedding,
    attention: by.attention,
    qk_norm: by['qk-norm'],
    mlp: by.mlp,
    norms: by.norm,
    head: by.head,
    total,
    non_embedding: total - by.embedding - by.head,
  };
}

/**
 * Forward FLOPs per token of the training form at sequence length T (a multiply-add counts 2):
 *
 *   forward = 2 * (attention + mlp + vocab * d)  +  2 * L * H * T * (dn + dr + dv)
 *
 * The first term is every matmul weight once per token: the attention projections (q or q_a/q_b, kv_a, kv_b,
 * o), the MLP, and the output head (vocab x d, counted even when tied, since the head matmul still runs; the
 * embedding lookup is a gather and costs nothing). kv_b expands each token's latent into its keys and values
 * once, so it is a per-token weight like the others. The second term is the scores q·k (dn + dr per head) and
 * the probability-weighted values (dv per head) against all T positions: the implementation computes the full
 * T x T score matrix and masks it, so there is no causal halving (the convention of Kaplan et al. and PaLM).
 * Norms, RoPE, softmax and activations are elementwise and left out. Training = 3 x forward.
 */
export function flopsPerToken(s: ModelSpec, seqLen: number): FlopsPerToken {
  const counts = parameterCounts(s);
  const matmul = 2 * (counts.attention + counts.mlp + s.vocab * s.d);
  const attention = 2 * s.L * s.H * seqLen * (s.dn + s.dr + s.dv);
  const fwd = matmul + attention;
  return { seq_len: seqLen, matmul, attention, forward: fwd, training: 3 * fwd };
}

export function cacheInfo(s: ModelSpec): CacheInfo[] {
  const serving = cachesFor(s);
  return CACHE_KINDS.map((kind) => {
    const numbers = cacheNumbersPerToken(s, kind);
    const bytes = numbers * FLOAT32_BYTES;
    return {
      kind,
      applicable: serving.includes(kind),
      numbers_per_token_per_layer: numbers,
      bytes_per_token_per_layer: bytes,
      total_bytes: CACHE_CONTEXTS.map((context) => ({ context, bytes: bytes * s.L * context })),
    };
  });
}

export function modelInfo(s: ModelSpec, seqLen: number): ModelInfo {
  return {
    variant: s.variant,
    dims: {
      vocab: s.vocab, d_model: s.d, n_layers: s.L, n_heads: s.H, q_lora_rank: s.dq, kv_lora_rank: s.dc,
      qk_nope_head_dim: s.dn, qk_rope_head_dim: s.dr, v_head_dim: s.dv, d_ff: s.dff, key_groups: s.G, tied: s.tied,
    },
    parameters: parameterCounts(s),
    flops_per_token: flopsPerToken(s, seqLen),
    kv_cache: cacheInfo(s),
  };
}

/** 393272320 -> "393.27M" */
export function humanCount(n: number): string {
  if (n >= 1e12) return `${(n / 1e12).toFixed(2)}T`;
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)}G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)}M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(2)}k`;
  return String(n);
}

/** Binary units, as memory is allocated. */
export function humanBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) (v /= 1024), u++;
  return u === 0 ? `${v} B` : `${v.toFixed(v >= 100 ? 0 : v >= 10 ? 1 : 2)} ${units[u]}`;
}

const contextLabel = (c: number) => `${c / 1024}k`;

/** The human form of `modelInfo`: three small tables. */
export function formatModelInfo(info: ModelInfo, name: string): string {
  const p = info.parameters;
  const d = info.dims;
  const lines: string[] = [];
  lines.push(`${name}: ${info.variant}, d_model ${d.d_model}, ${d.n_layers} layers, ${d.n_heads} heads, dc ${d.kv_lora_rank}, dn ${d.qk_nope_head_dim}, dr ${d.qk_rope_head_dim}, dv ${d.v_head_dim}, d_ff ${d.d_ff}, vocab ${d.vocab}${d.tied ? ' (tied)' : ''}`);
  lines.push('');
  const rows: [string, number][] = [
    ['embedding', p.embedding], ['attention', p.attention], ['qk-norm', p.qk_norm], ['mlp', p.mlp], ['norms', p.norms],
    ['head', p.head], ['total', p.total], ['non-embedding', p.non_embedding],
  ];
  lines.push('| parameters | count | |', '| --- | ---: | ---: |');
  for (const [k, v] of rows) lines.push(`| ${k} | ${v} | ${humanCount(v)} |`);
  lines.push('');
  const f = info.flops_per_token;
  lines.push(`| FLOPs per token at seq_len ${f.seq_len} | count | |`, '| --- | ---: | ---: |');
  for (const [k, v] of [['matmul (2 x weights)', f.matmul], ['attention scores + values', f.attention], ['forward', f.forward], ['training (3 x forward)', f.training]] as [string, number][]) {
    lines.push(`| ${k} | ${v} | ${humanCount(v)} |`);
  }
  lines.push('');
  lines.push(`| decode cache (float32) | numbers/token/layer | bytes/token/layer | ${CACHE_CONTEXTS.map((c) => `all layers @ ${contextLabel(c)}`).join(' | ')} |`);
  lines.push(`| --- | ---: | ---: | ${CACHE_CONTEXTS.map(() => '---:').join(' | ')} |`);
  for (const c of info.kv_cache) {
    const label = c.applicable ? c.kind : `${c.kind} (not for ${info.variant})`;
    lines.push(`| ${label} | ${c.numbers_per_token_per_layer} | ${c.bytes_per_token_per_layer} | ${c.total_bytes.map((t) => humanBytes(t.bytes)).join(' | ')} |`);
  }
  return lines.join('\n');
}

