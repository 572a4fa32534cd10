import * as tf from '@tensorflow/tfjs';
import { attentionDecode, attentionTrainingForm, type LayerCacheState } from './attention';
import { linear, rmsNorm, RopeTables, swiglu } from './layers';
import { headWeight, layerPrefix, type Params } from './params';
import type { CacheKind, ModelSpec } from './spec';
import { cacheNumbersPerToken, cachesFor } from './spec';

export interface ForwardResult {
  logits: tf.Tensor3D; // [B, T, V]
  /** Per layer and head, the maximum attention logit of this pass. [L, H] */
  maxLogits?: tf.Tensor2D;
}

function embed(P: Params, tokens: tf.Tensor2D): tf.Tensor3D {
  return tf.gather(P['model.embed_tokens.weight'], tokens) as tf.Tensor3D; // [B, T, d]
}

function mlpBlock(h: tf.Tensor, P: Params, pre: string, s: ModelSpec): tf.Tensor {
  const x = rmsNorm(h, P[`${pre}post_attention_layernorm.weight`], s.normEps);
  return tf.add(h, swiglu(x, P[`${pre}mlp.gate_proj.weight`], P[`${pre}mlp.up_proj.weight`], P[`${pre}mlp.down_proj.weight`]));
}

function finalNorm(x: tf.Tensor, P: Params, s: ModelSpec): tf.Tensor3D {
  return rmsNorm(x, P['model.norm.weight'], s.normEps) as tf.Tensor3D;
}

function outputLogits(x: tf.Tensor, P: Params, s: ModelSpec): tf.Tensor3D {
  return linear(finalNorm(x, P, s), headWeight(P)) as tf.Tensor3D;
}

/** The training form: a pre-norm decoder over whole sequences. Call inside tf.tidy (or a gradient function). */
export function forward(P: Params, s: ModelSpec, rope: RopeTables, tokens: tf.Tensor2D, trackMaxLogit = false): ForwardResult {
  const { hidden, maxLogits } = forwardHidden(P, s, rope, tokens, trackMaxLogit);
  return { logits: linear(hidden, headWeight(P)) as tf.Tensor3D, maxLogits };
}

/**
 * The training form up to the output head: the final-normed hidden states [B, T, d] that the head weight
 * (`headWeight`) turns into logits. For losses that never hold all logits at once (src/train/head-loss.ts).
 */
export function forwardHidden(P: Params, s: ModelSpec, rope: RopeTables, tokens: tf.Tensor2D, trackMaxLogit = false): { hidden: tf.Tensor3D; maxLogits?: tf.Tensor2D } {
  let x = embed(P, tokens);
  const maxes: tf.Tensor1D[] = [];
  for (let i = 0; i < s.L; i++) {
    const pre = layerPrefix(i);
    const att = attentionTrainingForm(rmsNorm(x, P[`${pre}input_layernorm.weight`], s.normEps) as tf.Tensor3D, P, `${pre}self_attn.`, s, rope, trackMaxLogit);
    if (att.maxLogit) maxes.push(att.maxLogit);
    x = mlpBlock(tf.add(x, att.out), P, pre, s) as tf.Tensor3D;
  }
  return { hidden: finalNorm(x, P, s), maxLogits: trackMaxLogit ? (tf.stack(maxes) as tf.Tensor2D) : undefined };
}

/**
 * An incremental decoder over one cache kind: `feed` takes n new tokens per sequence (a prefill when n > 1, a
 * decode step when n = 1) and returns their logits. It owns its cache tensors; call `dispose()` when done.
 */
export class IncrementalDecoder {
  private layers: LayerCacheState[];
  private position = 0;

  constructor(private P: Params, readonly spec: ModelSpec, private rope: RopeTables, readonly kind: CacheKind) {
    if (!cachesFor(spec).includes(kind)) throw new Error(`cache ${kind} does not serve the ${spec.variant} variant (use ${cachesFor(spec).join(' or ')})`);
    this.layers = Array.from({ length: spec.L }, () => ({}));
  }

  get length(): number {
    return this.position;
  }

  /** tokens [B, n] -> logits [B, n, V] */
  feed(tokens: tf.Tensor2D): tf.Tensor3D {
    const s = this.spec;
    const n = tokens.shape[1];
    const pos = this.position;
    const next: LayerCacheState[] = [];
    const logits = tf.tidy(() => {
      let x = embed(this.P, tokens);
      for (let i = 0; i < s.L; i++) {
        const pre = layerPrefix(i);
        const h = rmsNorm(x, this.P[`${pre}input_layernorm.weight`], s.normEps) as tf.Tensor3D;
        const att = attentionDecode(this.kind, h, this.P, `${pre}self_attn.`, s, this.rope, pos, this.layers[i]);
        for (const t of Object.values(att.cache)) if (t) tf.keep(t);
        next.push(att.cache);
        x = mlpBlock(tf.add(x, att.out), this.P, pre, s) as tf.Tensor3D;
      }
      return outputLogits(x, this.P, s);
    });
    this.disposeCaches();
    this.layers = next;
    this.position = pos + n;
    return logits;
  }

  /** What one layer's cache holds now: tensor name -> shape. */
  cacheShapes(layer = 0): Record<string, number[]> {
    const out: Record<string, number[]> = {};
    for (const [k, t] of Object.entries(this.layers[layer])) if (t) out[k] = t.shape;
    return out;
  }

  /** Numbers actually held per token in one layer, counted from the live tensors (not from a formula). */
  storedNumbersPerToken(layer = 0): number {
    const B = this.layers[layer].c?.shape[0] ?? 1;
    let total = 0;
    for (const t of Object.values(this.layers[layer])) if (t) total += t.size;
    return this.position ? total / (B * this.position) : 0;
  }

  expectedNumbersPerToken(): number {
    return cacheNumbersPerToken(this.spec, this.kind);
  }

  private disposeCaches(): void {
    for (const l of this.layers) for (const t of Object.values(l)) if (t) t.dispose();
  }

  dispose(): void {
    this.disposeCaches();
    this.layers = Array.from({ length: this.spec.L }, () => ({}));
    this.position = 0;
  }
}
