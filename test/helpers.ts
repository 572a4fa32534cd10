import * as tf from '@tensorflow/tfjs';
import { initParams, paramInfos } from '../src/model/params';
import type { RefWeights } from '../src/model/reference';
import type { ModelSpec } from '../src/model/spec';

/** A small model whose every dimension differs, so a transposed or mis-split weight cannot go unnoticed. */
export function tinySpec(over: Partial<ModelSpec> = {}): ModelSpec {
  return {
    variant: 'baseline', vocab: 37, d: 24, L: 2, H: 4, dq: 0, dc: 12, dn: 6, dr: 4, dv: 5, dff: 40, G: 4,
    scope: 'full', qkEps: 1e-6, normEps: 1e-6, ropeTheta: 10000, maxSeqLen: 32, tied: false, initStd: 0.25,
    ...over,
  };
}

/** Random weights with non-trivial norm weights (uniform in [0.5, 1.5]) so folded weights matter. */
export function randomParams(s: ModelSpec, seed = 1): Record<string, tf.Variable> {
  const P = initParams(s, seed);
  paramInfos(s).forEach((p, i) => {
    if (p.init === 'ones') {
      const v = tf.tidy(() => tf.randomUniform(p.shape, 0.5, 1.5, 'float32', seed * 31 + i));
      P[p.name].assign(v);
      v.dispose();
    }
  });
  return P;
}

export function toRefWeights(P: Record<string, tf.Tensor>): RefWeights {
  const W: RefWeights = {};
  for (const [k, t] of Object.entries(P)) W[k] = Float64Array.from(t.dataSync());
  return W;
}

export function randomTokens(n: number, vocab: number, seed: number): number[] {
  let x = seed >>> 0 || 1;
  return Array.from({ length: n }, () => {
    x ^= x << 13; x >>>= 0; x ^= x >>> 17; x ^= x << 5; x >>>= 0;
    return x % vocab;
  });
}
