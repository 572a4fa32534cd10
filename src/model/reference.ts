/**
 * An independent float64 reference of the training form (§1 and §3 of the design note), written with plain
 * JavaScript numbers and explicit loops: no TensorFlow.js, no reshapes, one head and one token at a time.
 * `referenceForward` runs a small model on tokens (tests, `mlactl verify`); the attention pieces below it are
 * exported for the decode benchmark, which checks one layer's output against a long drawn history.
 */
import type { ModelSpec } from './spec';
import { hasQkNorm } from './variants';

/** Weights by checkpoint name, row-major in `[out, in]` layout. */
export type RefWeights = Record<string, Float64Array>;

type Vec = Float64Array;

function matVec(w: Float64Array, rows: number, cols: number, x: ArrayLike<number>): Vec {
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

/** RoPE on the adjacent pairs of z[off .. off+dr) at position pos, in place. */
function ropeInPlace(z: Vec, off: number, dr: number, pos: number, theta: number): void {
  for (let i = 0; i < dr / 2; i++) {
    const a = pos * Math.pow(theta, (-2 * i) / dr);
    const c = Math.cos(a);
    const s = Math.sin(a);
    const x0 = z[off + 2 * i];
    const x1 = z[off + 2 * i + 1];
    z[off + 2 * i] = x0 * c - x1 * s;
    z[off + 2 * i + 1] = x0 * s + x1 * c;
  }
}

/**
 * Scale the first `width` features of each head's row by 1/RMS over its key group's concatenated slices, then by
 * the shared weight w [width]. In place.
 */
function groupNormInPlace(rows: Vec[], G: number, width: number, w: Vec, eps: number): void {
  const per = rows.length / G;
  for (let g = 0; g < G; g++) {
    let ss = 0;
    for (let h = g * per; h < (g + 1) * per; h++) for (let i = 0; i < width; i++) ss += rows[h][i] ** 2;
    const inv = 1 / Math.sqrt(ss / (per * width) + eps);
    for (let h = g * per; h < (g + 1) * per; h++) for (let i = 0; i < width; i++) rows[h][i] *= inv * w[i];
  }
}

// ---------------------------------------------------------------------------------------------------------------
// One attention layer (prefix `a`, e.g. `model.layers.0.self_attn.`), token by token

/** A token's per-head queries q_h [H][dn+dr], its latent c [dc] and un-rotated shared key kp [dr], from its normed hidden state. */
export function referenceProjections(W: RefWeights, a: string, s: ModelSpec, h: ArrayLike<number>): { q: Vec[]; c: Vec; kp: Vec } {
  const { d, H, dn, dr, dc } = s;
  const q =
    s.dq > 0
      ? matVec(W[`${a}q_b_proj.weight`], H * (dn + dr), s.dq, rmsNormRef(matVec(W[`${a}q_a_proj.weight`], s.dq, d, h), W[`${a}q_a_layernorm.weight`], s.normEps))
      : matVec(W[`${a}q_proj.weight`], H * (dn + dr), d, h);
  const akp = matVec(W[`${a}kv_a_proj_with_mqa.weight`], dc + dr, d, h);
  return {
    q: Array.from({ length: H }, (_, i) => q.slice(i * (dn + dr), (i + 1) * (dn + dr))),
    c: rmsNormRef(akp.slice(0, dc), W[`${a}kv_a_layernorm.weight`], s.normEps),
    kp: akp.slice(dc),
  };
}

/** Content keys kn_h = W_UK^h c, as one row [H*dn] (kv_b_proj's rows are per-head blocks [W_UK^h ; W_UV^h]). */
export function referenceContentKeys(W: RefWeights, a: string, s: ModelSpec, c: Vec): Vec {
  const w = W[`${a}kv_b_proj.weight`];
  const kn = new Float64Array(s.H * s.dn);
  for (let h = 0; h < s.H; h++) kn.set(matVec(w.subarray(h * (s.dn + s.dv) * s.dc), s.dn, s.dc, c), h * s.dn);
  return kn;
}

/** Per-head keys k_h = [kn_h ; kp] from content keys kn [H*dn] and the shared kp [dr]: [H][dn+dr]. */
export function referenceKeys(s: ModelSpec, kn: ArrayLike<number>, kp: ArrayLike<number>): Vec[] {
  return Array.from({ length: s.H }, (_, h) => {
    const k = new Float64Array(s.dn + s.dr);
    for (let i = 0; i < s.dn; i++) k[i] = kn[h * s.dn + i];
    for (let i = 0; i < s.dr; i++) k[s.dn + i] = kp[i];
    return k;
  });
}

/**
 * What meets in the scores: explicit QK-norm (§3; weight q_norm for queries, k_norm for keys; over the content
 * slices only for scope nope) when the variant has it, then RoPE at `pos` on each positional slice. In place.
 */
export function referenceNormRotate(rows: Vec[], W: RefWeights, a: string, s: ModelSpec, side: 'q' | 'k', pos: number): void {
  if (hasQkNorm(s)) groupNormInPlace(rows, s.G, s.scope === 'full' ? s.dn + s.dr : s.dn, W[`${a}${side}_norm.weight`], s.qkEps);
  for (const r of rows) ropeInPlace(r, s.dn, s.dr, pos, s.ropeTheta);
}

/** scale * q_h · k_h of one query against one key token, per head: [H]. */
export function referenceScores(s: ModelSpec, q: Vec[], k: Vec[]): Vec {
  const scale = 1 / Math.sqrt(s.dn + s.dr);
  return Float64Array.from(q, (qh, h) => {
    let acc = 0;
    for (let i = 0; i < qh.length; i++) acc += qh[i] * k[h][i];
    return scale * acc;
  });
}

/**
 * The attention output [d] of one query from its scores [H][S] against the tokens it sees (0..S-1): softmax per
 * head, values, W_O. The values go through the latent, sum_j p_h(j) v_h(j) = W_UV^h sum_j p_h(j) c(j) by
 * linearity, which keeps a long history affordable; `latent(j)` is token j's c [dc].
 */
export function referenceAttentionOutput(W: RefWeights, a: string, s: ModelSpec, scores: Vec[], latent: (j: number) => ArrayLike<number>): Vec {
  const { H, dn, dv, dc } = s;
  const wkvb = W[`${a}kv_b_proj.weight`];
  const merged = new Float64Array(H * dv);
  for (let h = 0; h < H; h++) {
    const sc = scores[h];
    let max = -Infinity;
    for (const v of sc) max = Math.max(max, v);
    let z = 0;
    for (const v of sc) z += Math.exp(v - max);
    const u = new Float64Array(dc);
    for (let j = 0; j < sc.length; j++) {
      const p = Math.exp(sc[j] - max) / z;
      const c = latent(j);
      for (let k = 0; k < dc; k++) u[k] += p * c[k];
    }
    merged.set(matVec(wkvb.subarray((h * (dn + dv) + dn) * dc), dv, dc, u), h * dv);
  }
  return matVec(W[`${a}o_proj.weight`], s.d, H * dv, merged);
}

// ---------------------------------------------------------------------------------------------------------------

/** Logits [T][V] for one token sequence, and the maximum scaled attention logit per layer and head [L][H]. */
export function referenceForward(W: RefWeights, s: ModelSpec, tokens: number[]): { logits: number[][]; maxLogits: number[][] } {
  const T = tokens.length;
  const { d, H } = s;
  let xs: Vec[] = tokens.map((t) => W['model.embed_tokens.weight'].slice(t * d, (t + 1) * d));
  const maxLogits: number[][] = [];

  for (let l = 0; l < s.L; l++) {
    const p = `model.layers.${l}.`;
    const a = `${p}self_attn.`;
    const tok = xs.map((x) => referenceProjections(W, a, s, rmsNormRef(x, W[`${p}input_layernorm.weight`], s.normEps)));
    const Q = tok.map((tk, t) => {
      referenceNormRotate(tk.q, W, a, s, 'q', t);
      return tk.q;
    });
    const K = tok.map((tk, j) => {
      const k = referenceKeys(s, referenceContentKeys(W, a, s, tk.c), tk.kp);
      referenceNormRotate(k, W, a, s, 'k', j);
      return k;
    });

    const next: Vec[] = [];
    const layerMax = new Array<number>(H).fill(-Infinity);
    for (let t = 0; t < T; t++) {
      // Causal: query t sees keys 0..t.
      const scores = Array.from({ length: H }, () => new Float64Array(t + 1));
      for (let j = 0; j <= t; j++) referenceScores(s, Q[t], K[j]).forEach((v, h) => (scores[h][j] = v));
      scores.forEach((sc, h) => (layerMax[h] = Math.max(layerMax[h], ...sc)));
      const attn = referenceAttentionOutput(W, a, s, scores, (j) => tok[j].c);
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
