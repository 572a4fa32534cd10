import * as tf from '@tensorflow/tfjs';
import { attentionTrainingForm } from './attention';
import {
  absorbedDecodeStep,
  appendTokens,
  disposeDecodeLayer,
  disposeFixedCache,
  fixedCacheShapes,
  fixedCacheTensors,
  prepareDecodeLayer,
  type DecodeLayer,
  type FixedCache,
} from './decode';
import { linear, rmsNorm, RopeTables, swiglu } from './layers';
import { headWeight, layerPrefix, type Params } from './params';
import type { CacheKind, ModelSpec } from './spec';
import { cacheNumbersPerToken } from './spec';
import { cachesFor } from './variants';

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
 * (`headWeight`) turns into logits. For losses that never hold all logits at once (src/engine/tfjs/head-loss.ts).
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
 * decode step when n = 1) and returns their logits. Each layer appends the tokens' cache rows, then attends with
 * the absorbed step of decode.ts. It owns its cache tensors and folded weights; call `dispose()` when done.
 */
export class IncrementalDecoder {
  /** Folded on the first feed, from the parameters as they are then. */
  private layers?: DecodeLayer[];
  private caches: (FixedCache | undefined)[];
  private position = 0;

  constructor(private P: Params, readonly spec: ModelSpec, private rope: RopeTables, readonly kind: CacheKind) {
    if (!cachesFor(spec).includes(kind)) throw new Error(`cache ${kind} does not serve the ${spec.variant} variant (use ${cachesFor(spec).join(' or ')})`);
    this.caches = Array.from({ length: spec.L }, () => undefined);
  }

  get length(): number {
    return this.position;
  }

  /** tokens [B, n] -> logits [B, n, V] */
  feed(tokens: tf.Tensor2D): tf.Tensor3D {
    const s = this.spec;
    const layers = (this.layers ??= Array.from({ length: s.L }, (_, i) => prepareDecodeLayer(this.P, `${layerPrefix(i)}self_attn.`, s)));
    const next: FixedCache[] = [];
    const logits = tf.tidy(() => {
      let x = embed(this.P, tokens);
      for (let i = 0; i < s.L; i++) {
        const pre = layerPrefix(i);
        const h = rmsNorm(x, this.P[`${pre}input_layernorm.weight`], s.normEps) as tf.Tensor3D;
        const cache = appendTokens(this.kind, layers[i], this.caches[i], h, this.rope);
        fixedCacheTensors(cache).forEach((t) => tf.keep(t));
        next.push(cache);
        x = mlpBlock(tf.add(x, absorbedDecodeStep(layers[i], h, cache, this.rope)), this.P, pre, s) as tf.Tensor3D;
      }
      return outputLogits(x, this.P, s);
    });
    this.disposeCaches();
    this.caches = next;
    this.position += tokens.shape[1];
    return logits;
  }

  /** What one layer's cache holds now: tensor name -> shape, sequences first. */
  cacheShapes(layer = 0): Record<string, number[]> {
    const cache = this.caches[layer];
    return cache ? fixedCacheShapes(cache) : {};
  }

  /** Numbers actually held per token in one layer, counted from the live tensors (not from a formula). */
  storedNumbersPerToken(layer = 0): number {
    const cache = this.caches[layer];
    if (!cache) return 0;
    const total = fixedCacheTensors(cache).reduce((n, t) => n + t.size, 0);
    return total / (cache.c.length * this.position);
  }

  expectedNumbersPerToken(): number {
    return cacheNumbersPerToken(this.spec, this.kind);
  }

  private disposeCaches(): void {
    for (const c of this.caches) if (c) disposeFixedCache(c);
  }

  dispose(): void {
    this.disposeCaches();
    this.caches = Array.from({ length: this.spec.L }, () => undefined);
    this.position = 0;
    this.layers?.forEach(disposeDecodeLayer);
    this.layers = undefined;
  }
}
