// Muon (Jordan et al. 2024; scaled as in Moonlight, Liu et al. 2025) as pure functions. Math: design/mla-math.md §7.
import * as tf from '@tensorflow/tfjs';

/**
 * Coefficients of the quintic f(x) = a x + b x^3 + c x^5 applied to the singular values. They trade exactness for
 * speed: f has slope 3.4445 at 0, so small singular values grow fast, and the iterates settle in roughly
 * [0.7, 1.2] instead of converging to exactly 1, which Muon does not need.
 */
export const NEWTON_SCHULZ_COEFFS = { a: 3.4445, b: -4.775, c: 2.0315 } as const;

/**
 * Approximately orthogonalises G (replaces its singular values by values near 1, keeping the singular vectors)
 * with `steps` quintic Newton-Schulz iterations  X <- a X + (b A + c A^2) X,  A = X X^T.
 */
export function newtonSchulz5(G: tf.Tensor2D, steps = 5): tf.Tensor2D {
  if (G.rank !== 2) throw new Error(`newtonSchulz5: expected a 2-D tensor, got shape [${G.shape}]`);
  const { a, b, c } = NEWTON_SCHULZ_COEFFS;
  return tf.tidy(() => {
    // Working on the wide orientation makes A = X X^T the smaller of the two Gram matrices.
    const transposed = G.shape[0] > G.shape[1];
    let X: tf.Tensor2D = transposed ? tf.transpose(G) : G;
    // Dividing by the Frobenius norm bounds every singular value by 1, inside f's basin; 1e-7 guards G = 0.
    X = tf.div(X, tf.add(tf.sqrt(tf.sum(tf.square(X))), 1e-7));
    for (let i = 0; i < steps; i++) {
      const A = tf.matMul(X, X, false, true); // [r, r], r = min(rows, cols)
      const B = tf.add(tf.mul(A, b), tf.mul(tf.matMul(A, A), c));
      X = tf.add(tf.mul(X, a), tf.matMul(B, X));
    }
    return transposed ? tf.transpose(X) : X;
  });
}

export interface MuonHyper {
  lr: number;
  momentum: number;
  weightDecay: number;
  /** Default true: the update looks one momentum step ahead. */
  nesterov?: boolean;
}

export interface MuonResult {
  p: tf.Tensor2D;
  m: tf.Tensor2D;
}

/**
 * The factor that gives an orthogonalised update the RMS of a typical AdamW update (about 0.2), so one learning
 * rate suits both optimizers: an [r, c] matrix with singular values 1 has RMS sqrt(min(r,c)/(r c)) = 1/sqrt(max(r,c)).
 */
export function muonUpdateScale(rows: number, cols: number): number {
  return 0.2 * Math.sqrt(Math.max(rows, cols));
}

/**
 * One Muon step for one 2-D parameter. The caller owns the returned tensors.
 *
 *   m' = mu m + g
 *   u  = g + mu m'   (Nesterov)   or   m'
 *   p' = p (1 - lr wd) - lr * 0.2 sqrt(max(rows, cols)) * NS5(u)
 */
export function muonStep(p: tf.Tensor, g: tf.Tensor, m: tf.Tensor, hp: MuonHyper): MuonResult {
  if (p.rank !== 2) throw new Error(`muonStep: Muon updates 2-D weights only, got shape [${p.shape}]`);
  const [rows, cols] = p.shape as [number, number];
  const nesterov = hp.nesterov ?? true;
  return tf.tidy(() => {
    const mNext = tf.add(tf.mul(m, hp.momentum), g) as tf.Tensor2D;
    const direction = (nesterov ? tf.add(g, tf.mul(mNext, hp.momentum)) : mNext) as tf.Tensor2D;
    const orthogonal = newtonSchulz5(direction);
    const decayed = hp.weightDecay === 0 ? p : tf.mul(p, 1 - hp.lr * hp.weightDecay);
    const pNext = tf.sub(decayed, tf.mul(orthogonal, hp.lr * muonUpdateScale(rows, cols))) as tf.Tensor2D;
    return { p: pNext, m: mNext };
  });
}
