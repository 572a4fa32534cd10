// Learning-rate sensitivity (Wortsman et al. 2023, "Small-scale proxies for large-scale Transformer training
// instabilities"): for each series of arm groups that differ only in `train.lr`, the final validation loss and the
// peak max attention logit against the learning rate, seeds aggregated. A variant that tolerates a wide range of
// learning rates has a flat loss curve and a logit peak that does not run away at the high end.
import { differingKeys, formatLr, type ArmGroup, type RunStats } from './groups';
import { meanWithError, type MeanWithError } from './stats';
import { formatMeanWithError } from './tables';
import type { RunStatus } from './types';

export interface DivergedRun {
  run: string;
  seed: number | null;
  at_step: number | null;
  tokens: number;
  /** The run's own peak max logit before it stopped (the blow-up itself), when one was logged. */
  max_logit_peak: number | null;
}

/** One arm group of a series: one learning rate, every seed. */
export interface SensitivityPoint {
  lr: number;
  /** The arm group's label, as in the arm-group table. */
  group: string;
  runs: string[];
  statuses: Partial<Record<RunStatus, number>>;
  /** Over the completed seeds only: a diverged or unfinished run has no comparable final loss. */
  final_val_loss: MeanWithError;
  /** Per-run peak max logit, over the same completed seeds; diverged runs are listed in `diverged` instead. */
  max_logit_peak: MeanWithError;
  /** Never dropped: every diverged seed at this learning rate. */
  diverged: DivergedRun[];
  best: boolean;
}

export interface SensitivitySeries {
  /** The variant, with the config keys that set the series apart when a variant has several series. */
  label: string;
  variant: string;
  /** Those keys (flattened, JSON-encoded values); empty when the variant has one series. */
  keys: Record<string, string>;
  /** Sorted by learning rate. */
  points: SensitivityPoint[];
  /** Lowest mean final validation loss among the learning rates where no seed diverged; null when there is none. */
  best_lr: number | null;
  /** One sentence: how best_lr was chosen, or why there is none. */
  best_reason: string;
  /** Set when best_lr is the lowest or highest learning rate run: the optimum may then lie outside the sweep. */
  best_at_edge: 'lowest' | 'highest' | null;
}

export interface SensitivityResult {
  /** Every learning rate run, ascending. */
  lrs: number[];
  series: SensitivitySeries[];
}

function runPeak(stats: RunStats): number | null {
  return stats.maxLogitPeak?.value ?? stats.run.summary.max_logit_peak;
}

function point(group: ArmGroup): SensitivityPoint {
  const completed = group.runs.filter((r) => r.status === 'completed');
  return {
    lr: group.lr,
    group: group.label,
    runs: group.runs.map((r) => r.run.id),
    statuses: group.statuses,
    final_val_loss: meanWithError(completed.map((r) => r.finalValLoss)),
    max_logit_peak: meanWithError(completed.map(runPeak)),
    diverged: group.runs.filter((r) => r.status === 'diverged').map((r) => ({
      run: r.run.id, seed: r.seed, at_step: r.run.summary.diverged_at_step, tokens: r.tokens, max_logit_peak: runPeak(r),
    })),
    best: false,
  };
}

/**
 * The best learning rate is only chosen among learning rates where every seed survived: a rate at which one seed
 * in three blows up is not one to recommend, however good the other two look.
 */
function chooseBest(points: SensitivityPoint[]): Pick<SensitivitySeries, 'best_lr' | 'best_reason' | 'best_at_edge'> {
  const none = (reason: string) => ({ best_lr: null, best_reason: reason, best_at_edge: null });
  if (points.length < 2) return none('only one learning rate was run');
  const safe = points.filter((p) => p.diverged.length === 0 && p.final_val_loss.mean !== null);
  if (safe.length === 0) {
    if (points.every((p) => p.diverged.length > 0)) return none('every learning rate has a diverged seed');
    return none('no learning rate has a completed run without a diverged seed');
  }
  // Ties go to the smaller learning rate (points are sorted ascending), the safer choice.
  const best = safe.reduce((a, b) => ((b.final_val_loss.mean as number) < (a.final_val_loss.mean as number) ? b : a));
  best.best = true;
  const excluded = points.length - safe.length;
  let reason = `lowest mean final validation loss of the ${safe.length} learning rate${safe.length === 1 ? '' : 's'} where no seed diverged`;
  if (excluded > 0) reason += ` (${excluded} left out: a diverged seed or no completed run)`;
  const edge = best === points[0] ? 'lowest' : best === points[points.length - 1] ? 'highest' : null;
  if (edge) reason += `; it is the ${edge} learning rate run, so the optimum may lie beyond the swept range`;
  return { best_lr: best.lr, best_reason: reason, best_at_edge: edge };
}

/** Keys that differ between some of the given configs, model.variant and train.lr aside: they are the axes. */
function differingSettings(configs: Record<string, string>[]): string[] {
  return differingKeys(configs).filter((k) => k !== 'train.lr' && k !== 'model.variant');
}

const SHOWN_KEYS = 3;

/**
 * Null unless the runs differ in `train.lr`. Arm groups (runs that differ only by seed) whose configs agree on
 * everything but the learning rate form a series; runs that also differ in other keys (batch size, warmup, ...)
 * form separate series named by those keys, so a curve never mixes two settings.
 */
export function lrSensitivity(groups: ArmGroup[]): SensitivityResult | null {
  const lrs = [...new Set(groups.map((g) => g.lr))].sort((a, b) => a - b);
  if (lrs.length < 2) return null;

  const buckets = new Map<string, ArmGroup[]>();
  for (const g of groups) {
    const rest = Object.fromEntries(Object.entries(g.sharedConfig).filter(([k]) => k !== 'train.lr'));
    const key = JSON.stringify(rest);
    buckets.set(key, [...(buckets.get(key) ?? []), g]);
  }
  const members = [...buckets.values()];

  const byVariant = new Map<string, ArmGroup[][]>();
  for (const m of members) byVariant.set(m[0].variant, [...(byVariant.get(m[0].variant) ?? []), m]);

  const series: SensitivitySeries[] = [];
  for (const m of members) {
    const variant = m[0].variant;
    const siblings = byVariant.get(variant)!;
    const keys: Record<string, string> = {};
    let label = variant;
    if (siblings.length > 1) {
      const differing = differingSettings(siblings.map((s) => s[0].sharedConfig));
      for (const k of differing) keys[k] = m[0].sharedConfig[k] ?? 'null';
      const parts = differing.slice(0, SHOWN_KEYS).map((k) => `${k}=${keys[k].replace(/^"(.*)"$/, '$1')}`);
      if (differing.length > SHOWN_KEYS) parts.push(`#${siblings.indexOf(m) + 1}`);
      label = `${variant} (${parts.join(', ')})`;
    }
    const points = m.map(point).sort((a, b) => a.lr - b.lr);
    series.push({ label, variant, keys, points, ...chooseBest(points) });
  }
  return { lrs, series };
}

/** Summary sentences for the report: the best learning rate of each series, or why there is none. */
export function sensitivitySummary(result: SensitivityResult): string[] {
  const parts = result.series.map((s) => {
    if (s.best_lr === null) return `${s.label}: none (${s.best_reason})`;
    const best = s.points.find((p) => p.best)!;
    return `${s.label} ${formatLr(s.best_lr)}, ${formatMeanWithError(best.final_val_loss)}`;
  });
  const lines = [`Best learning rate (lowest mean final validation loss among learning rates where no seed diverged): ${parts.join('; ')}.`];
  const atEdge = result.series.filter((s) => s.best_at_edge !== null);
  if (atEdge.length > 0) {
    const which = atEdge.map((s) => `${s.label} (its ${s.best_at_edge} learning rate)`);
    lines.push(`The best learning rate lies at the edge of the swept range, so the optimum may lie beyond it, for: ${which.join('; ')}.`);
  }
  return lines;
}
