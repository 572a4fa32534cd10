/**
 * QK-clip (MuonClip, Kimi K2) for MLA, design note §5. After the optimizer step, every head whose maximum logit
 * S_h exceeded tau has its query and key weights scaled so that, on the same input, its logits shrink by
 * eta = tau / S_h: content logits by eta^alpha * eta^(1-alpha), positional logits by eta on the query side
 * alone (the positional key is shared by all heads, so it cannot be scaled per head). Optimizer state is untouched.
 */
import * as tf from '@tensorflow/tfjs';
import type { QkClipConfig } from '../config/types';
import { layerPrefix } from '../model/params';
import type { ModelSpec } from '../model/spec';

export interface ClipPlan {
  /** Per layer: the row scale of the query projection (W_Q or W_UQ), length H*(dn+dr). */
  queryRows: Float32Array[];
  /** Per layer: the row scale of W_UKV (kv_b_proj), length H*(dn+dv). */
  keyRows: Float32Array[];
  /** Heads clipped, per layer. */
  clipped: number[];
}

/** Pure: from per-layer per-head maxima [L][H] to row scales. Layers with nothing to clip get all-ones rows. */
export function planQkClip(s: ModelSpec, maxLogits: ArrayLike<number>[], cfg: QkClipConfig): ClipPlan {
  const plan: ClipPlan = { queryRows: [], keyRows: [], clipped: [] };
  for (let l = 0; l < s.L; l++) {
    const q = new Float32Array(s.H * (s.dn + s.dr)).fill(1);
    const k = new Float32Array(s.H * (s.dn + s.dv)).fill(1);
    let clipped = 0;
    for (let h = 0; h < s.H; h++) {
      const S = maxLogits[l][h];
      if (!(S > cfg.tau)) continue;
      clipped++;
      const eta = cfg.tau / S;
      const q0 = h * (s.dn + s.dr);
      q.fill(Math.pow(eta, cfg.alpha), q0, q0 + s.dn); // rows producing qn_h
      q.fill(eta, q0 + s.dn, q0 + s.dn + s.dr); // rows producing qp_h
      const k0 = h * (s.dn + s.dv);
      k.fill(Math.pow(eta, 1 - cfg.alpha), k0, k0 + s.dn); // rows producing kn_h; value rows stay
    }
    plan.queryRows.push(q);
    plan.keyRows.push(k);
    plan.clipped.push(clipped);
  }
  return plan;
}

/** Apply a plan to the live variables in place. Returns the number of heads clipped. */
export function applyQkClip(vars: Record<string, tf.Variable>, s: ModelSpec, plan: ClipPlan): number {
  let total = 0;
  for (let l = 0; l < s.L; l++) {
    if (plan.clipped[l] === 0) continue;
    total += plan.clipped[l];
    const a = `${layerPrefix(l)}self_attn.`;
    const qName = s.dq > 0 ? `${a}q_b_proj.weight` : `${a}q_proj.weight`;
    scaleRows(vars[qName], plan.queryRows[l]);
    scaleRows(vars[`${a}kv_b_proj.weight`], plan.keyRows[l]);
  }
  return total;
}

function scaleRows(v: tf.Variable, rows: Float32Array): void {
  const next = tf.tidy(() => tf.mul(v, tf.tensor2d(rows, [rows.length, 1])));
  v.assign(next);
  next.dispose();
}
