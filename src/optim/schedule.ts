// Learning-rate schedules. Warmup and decay lengths arrive in steps; converting tokens to steps is the caller's job.
import { UserError } from '../errors';

export interface ScheduleConfig {
  lr: number;
  min_lr_ratio: number;
  schedule: 'cosine' | 'wsd';
  /** For `wsd`: the fraction of all steps spent in the final linear decay. */
  decay_fraction: number;
}

/**
 * The learning rate for 0-based `step` of a run of `totalSteps` steps with `warmupSteps` warmup steps.
 *
 * Step i uses f(i + 1), where f is a continuous curve over the run's progress s in [0, T] (T = totalSteps,
 * W = min(warmupSteps, T), min = min_lr_ratio * lr). Taking s = i + 1, the number of steps done once step i is
 * applied, means the first step uses lr / W and the last step uses exactly min:
 *
 *   warmup, s <= W:   f(s) = lr * s / W                         (steps 0..W-1 use lr/W, 2 lr/W, ..., lr)
 *   cosine, s >  W:   f(s) = min + (lr - min) * (1 + cos(pi * (s - W) / (T - W))) / 2
 *   wsd,    s >  W:   f(s) = lr                                 for s <= S,  S = max(W, T - decay_fraction * T)
 *                     f(s) = lr - (lr - min) * (s - S) / (T - S)  for s >  S
 *
 * Steps past the end reuse the last step's rate (s is clamped to T). With W = 0 there is no warmup and the first step
 * already decays; with decay_fraction = 0, `wsd` stays at lr to the end.
 */
export function learningRate(step: number, totalSteps: number, warmupSteps: number, cfg: ScheduleConfig): number {
  if (!Number.isInteger(step) || step < 0) throw new Error(`learningRate: step must be a 0-based integer, got ${step}`);
  if (!(totalSteps >= 1)) throw new UserError(`train.tokens gives ${totalSteps} optimizer steps; at least 1 is needed`);
  if (!(warmupSteps >= 0)) throw new UserError(`train.warmup_tokens gives ${warmupSteps} warmup steps; must be >= 0`);
  if (!(cfg.min_lr_ratio >= 0 && cfg.min_lr_ratio <= 1)) {
    throw new UserError(`train.min_lr_ratio must be in [0, 1], got ${cfg.min_lr_ratio}`);
  }
  const peak = cfg.lr;
  const floor = cfg.min_lr_ratio * peak;
  const T = totalSteps;
  const W = Math.min(warmupSteps, T);
  const s = Math.min(step + 1, T);
  if (s <= W) return (peak * s) / W;
  switch (cfg.schedule) {
    case 'cosine': {
      const progress = (s - W) / (T - W);
      return floor + ((peak - floor) * (1 + Math.cos(Math.PI * progress))) / 2;
    }
    case 'wsd': {
      if (!(cfg.decay_fraction >= 0 && cfg.decay_fraction <= 1)) {
        throw new UserError(`train.decay_fraction must be in [0, 1], got ${cfg.decay_fraction}`);
      }
      const decayStart = Math.max(W, T - cfg.decay_fraction * T);
      if (s <= decayStart) return peak;
      return peak - ((peak - floor) * (s - decayStart)) / (T - decayStart);
    }
    default:
      throw new UserError(`train.schedule must be 'cosine' or 'wsd', got '${String(cfg.schedule)}'`);
  }
}
