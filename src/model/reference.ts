/**
 * An independent float64 reference of the training form (§1 and §3 of the design note), written with plain
 * JavaScript numbers and explicit loops: no TensorFlow.js, no reshapes, one head and one token at a time.
 * It is slow on purpose-built clarity and meant for small models in tests and `mlactl verify`.
 */
import type { ModelSpec } from './spec';

/** Weights by checkpoint name, row-major in `[out, in]` layout. */
export type RefWeights = Record<string, Float64Array>;

type Vec = Float64Array;

function matVec(w: Float64Array, rows: number, cols: number, x: Vec): Vec {
  const y = new Float64Array(rows);
  for (let r = 0; r < rows; r++) {
    let acc = 0;
    for (let c = 0; c < cols; c++) acc += w[r * cols + c] * x[c];
    y[r] = acc;
  }
  return y;
}

function rmsNormRef(x: Vec, w: Vec | null, eps: number): Vec {
  let ss = 0;
  for (const v of x) ss += v * v;
  const inv = 1 / Math.sqrt(ss / x.length + eps);
  return x.map((v, i) => v * inv * (w ? w[i] : 1));
}

function ropeRef(x: Vec, pos: number, theta: number): Vec {
  const dr = x.length;
  const y = new Float64Array(dr);
  for (let i = 0; i < dr / 2; i++) {
    const a = pos * Math.pow(theta, (-2 * i) / dr);
    const c = Math.cos(a);
    const s = Math.sin(a);
    y[2 * i] = x[2 * i] * c - x[2 * i + 1] * s;
    y[2 * i + 1] = x[2 * i] * s + x[2 * i + 1] * c;
  }
  return y;
}

const dot = (a: Vec, b: Vec) => a.reduce((acc, v, i) => acc + v * b[i], 0);

/**
 * Scale the members of each key group by 1/RMS over the group's concatenated vectors, then by the shared weight.
 * `vecs[h]` is head h's query or key (already cut to the normalised slice).
 */
function groupNorm(vecs: Vec[], G: number, w: Vec, eps: number): Vec[] {
  const per = vecs.length / G;
  const out: Vec[] = [];
  for (let g = 0; g < G; g++) {
    let ss = 0;
    let count = 0;
    for (let h = g * per; h < (g + 1) * per; h++) for (const v of vecs[h]) (ss += v * v), count++;
    const inv = 1 / Math.sqrt(ss / count + eps);
    for (let h = g * per; h < (g + 1) * per; h++) out.push(vecs[h].map((v, i) => v * inv * w[i]));
  }
  return out;
}

/** Logits [T][V] for one token sequence, and the maximum scaled attention logit per layer and head [L][H]. */
export function referenceForward(W: RefWeights, s: ModelSpec, tokens: number[]): { logits: number[][]; maxLogits: number[][] } {
  const T = tokens.length;
  const { d, H, dn, dr, dv, dc } = s;
  let xs: Vec[] = tokens.map((t) => W['model.embed_tokens.weight'].slice(t * d, (t + 1) * d));
  const scale = 1 / Math.sqrt(dn + dr);
  const maxLogits: number[][] = [];

  for (let l = 0; l < s.L; l++) {
    const p = `model.layers.${l}.`;
    const a = `${p}self_attn.`;
    const hs = xs.map((x) => rmsNormRef(x, W[`${p}input_layernorm.weight`], s.normEps));

    // Per token: queries per head, latent, shared positional key, per-head content keys and values.
    const Q: Vec[][] = []; // [t][h] of size dn+dr
    const K: Vec[][] = []; // [t][h] of size dn+dr (kp repeated)
    const Vv: Vec[][] = []; // [t][h] of size dv
    for (const h of hs) {
      const q =
        s.dq > 0
          ? matVec(W[`${a}q_b_proj.weight`], H * (dn + dr), s.dq, rmsNormRef(matVec(W[`${a}q_a_proj.weight`], s.dq, d, h), W[`${a}q_a_layernorm.weight`], s.normEps))
          : matVec(W[`${a}q_proj.weight`], H * (dn + dr), d, h);
      const akp = matVec(W[`${a}kv_a_proj_with_mqa.weight`], dc + dr, d, h);
      const c = rmsNormRef(akp.slice(0, dc), W[`${a}kv_a_layernorm.weight`], s.normEps);
      const kp = akp.slice(dc);
      const kv = matVec(W[`${a}kv_b_proj.weight`], H * (dn + dv), dc, c);
      const qh: Vec[] = [];
      const kh: Vec[] = [];
      const vh: Vec[] = [];
      for (let i = 0; i < H; i++) {
        qh.push(q.slice(i * (dn + dr), (i + 1) * (dn + dr)));
        const k = new Float64Array(dn + dr);
        k.set(kv.slice(i * (dn + dv), i * (dn + dv) + dn));
        k.set(kp, dn);
        kh.push(k);
        vh.push(kv.slice(i * (dn + dv) + dn, (i + 1) * (dn + dv)));
      }
      Q.push(qh);
      K.push(kh);
      Vv.push(vh);
    }

    // Explicit QK-norm (§3), before RoPE.
    if (s.variant === 'qk-norm') {
      const gq = W[`${a}q_norm.weight`];
      const gk = W[`${a}k_norm.weight`];
      for (let t = 0; t < T; t++) {
        if (s.scope === 'full') {
          Q[t] = groupNorm(Q[t], s.G, gq, s.qkEps);
          K[t] = groupNorm(K[t], s.G, gk, s.qkEps);
        } else {
          const qn = groupNorm(Q[t].map((v) => v.slice(0, dn)), s.G, gq, s.qkEps);
          const kn = groupNorm(K[t].map((v) => v.slice(0, dn)), s.G, gk, s.qkEps);
          for (let i = 0; i < H; i++) {
            Q[t][i].set(qn[i], 0);
            K[t][i].set(kn[i], 0);
          }
        }
      }
    }
    // RoPE on the positional slice.
    for (let t = 0; t < T; t++) {
      for (let i = 0; i < H; i++) {
        Q[t][i].set(ropeRef(Q[t][i].slice(dn), t, s.ropeTheta), dn);
        K[t][i].set(ropeRef(K[t][i].slice(dn), t, s.ropeTheta), dn);
      }
    }

    const next: Vec[] = [];
    const layerMax = new Array<number>(H).fill(-Infinity);
    for (let t = 0; t < T; t++) {
      const merged = new Float64Array(H * dv);
      for (let i = 0; i < H; i++) {
        const sc: number[] = [];
        for (let j = 0; j <= t; j++) sc.push(scale * dot(Q[t][i], K[j][i]));
        const m = Math.max(...sc);
        layerMax[i] = Math.max(layerMax[i], m);
        const e = sc.map((v) => Math.exp(v - m));
        const z = e.reduce((x, y) => x + y, 0);
        for (let j = 0; j <= t; j++) for (let k = 0; k < dv; k++) merged[i * dv + k] += (e[j] / z) * Vv[j][i][k];
      }
      const attn = matVec(W[`${a}o_proj.weight`], d, H * dv, merged);
      const h1 = xs[t].map((v, k) => v + attn[k]);
      const u = rmsNormRef(h1, W[`${p}post_attention_layernorm.weight`], s.normEps);
      const g = matVec(W[`${p}mlp.gate_proj.weight`], s.dff, d, u);
      const up = matVec(W[`${p}mlp.up_proj.weight`], s.dff, d, u);
      const act = g.map((v, k) => (v / (1 + Math.exp(-v))) * up[k]);
      const down = matVec(W[`${p}mlp.down_proj.weight`], d, s.dff, act);
      next.push(h1.map((v, k) => v + down[k]));
    }
    xs = next;
    maxLogits.push(layerMax);
  }
  const head = W['lm_head.weight'] ?? W['model.embed_tokens.weight'];
  const logits = xs.map((x) => Array.from(matVec(head, s.vocab, d, rmsNormRef(x, W['model.norm.weight'], s.normEps))));
  return { logits, maxLogits };
}

/** max |a - b| / max |b|: the normwise relative error the tests bound. */
export function maxRelativeError(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < b.length; i++) {
    num = Math.max(num, Math.abs(a[i] - b[i]));
    den = Math.max(den, Math.abs(b[i]));
  }
  return den === 0 ? num : num / den;
}
