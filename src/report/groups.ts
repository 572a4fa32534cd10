// Arm groups: runs whose resolved configs differ only by seed, summarised as mean ± std over seeds.
import { UserError } from '../errors';
import { aggregate, cleanSeries, interpolateAt, type Aggregate } from './stats';
import type { LoadedRun, RunStatus } from './types';

/**
 * Config keys that may differ inside one arm group: the seeds (model init and data order) and the bookkeeping
 * that names a run or describes the sweep it belongs to rather than what was trained.
 */
export function isSeedOrBookkeepingKey(key: string): boolean {
  return key === 'seed' || key === 'data.seed' || key === 'name' || key === 'experiment' || key.startsWith('experiment.');
}

/** Dotted keys to JSON-encoded leaf values (arrays are leaves: `eval.tasks` compares as a whole). */
export function flattenConfig(value: unknown, prefix = '', out: Record<string, string> = {}): Record<string, string> {
  if (typeof value === 'object' && value !== null && !Array.isArray(value)) {
    const entries = Object.entries(value as Record<string, unknown>);
    if (entries.length === 0 && prefix) out[prefix] = '{}';
    for (const [key, child] of entries) flattenConfig(child, prefix ? `${prefix}.${key}` : key, out);
  } else if (prefix) {
    out[prefix] = JSON.stringify(value ?? null);
  }
  return out;
}

export interface MaxLogitPeak {
  value: number;
  tokens: number;
  step: number;
  layer: number;
  /** Known only when maxlogits.csv holds the per-head detail. */
  head: number | null;
}

/** One run reduced to the numbers the comparison reports. */
export interface RunStats {
  run: LoadedRun;
  status: RunStatus;
  seed: number | null;
  tokens: number;
  finalTrainLoss: number | null;
  finalValLoss: number | null;
  bestValLoss: number | null;
  /** Validation loss interpolated at the common token budget (see commonValTokens). */
  valLossMatched: number | null;
  maxLogitPeak: MaxLogitPeak | null;
  /** Heads clipped over the whole run: summary.json's total, else the sum over the logged steps. */
  headsClippedTotal: number;
  /** `task.metric` → value and standard error from eval/results.json. */
  eval: Record<string, { value: number; stderr: number | null }>;
}

export interface EvalAggregate extends Aggregate {
  /** Root mean square of the runs' own standard errors: the item-sampling error of one run's estimate. */
  stderr: number | null;
}

export interface ArmGroup {
  label: string;
  variant: string;
  lr: number;
  /** The config (flattened, seed keys removed) shared by every run of the group. */
  sharedConfig: Record<string, string>;
  runs: RunStats[];
  statuses: Partial<Record<RunStatus, number>>;
  /** True when no run completed: the final values then come from unfinished runs and are not comparable. */
  partial: boolean;
  finalTrainLoss: Aggregate;
  finalValLoss: Aggregate;
  bestValLoss: Aggregate;
  valLossMatched: Aggregate;
  tokens: Aggregate;
  headsClipped: Aggregate;
  /** The highest max logit over all the group's runs, and which run reached it. */
  maxLogitPeak: (MaxLogitPeak & { runId: string }) | null;
  eval: Record<string, EvalAggregate>;
  /** QK-clip's threshold from the config (the same for the whole group, since only seeds differ). */
  tau: number;
}

export function valSeries(run: LoadedRun) {
  return cleanSeries(run.metrics.map((m) => ({ tokens: m.tokens, value: m.val_loss })));
}

export function trainSeries(run: LoadedRun) {
  return cleanSeries(run.metrics.map((m) => ({ tokens: m.tokens, value: m.train_loss })));
}

/**
 * The token budget every completed run reached with a validation measurement: the smallest of their last
 * validation token counts. Unfinished runs do not shrink it (a run that diverged early would otherwise
 * reduce the comparison to its first eval). Null when no run has validation losses.
 */
export function commonValTokens(runs: LoadedRun[]): number | null {
  const completed = runs.filter((r) => r.summary.status === 'completed');
  const pool = completed.length > 0 ? completed : runs;
  const lastTokens = pool.map((r) => valSeries(r)).filter((s) => s.length > 0).map((s) => s[s.length - 1].tokens);
  return lastTokens.length > 0 ? Math.min(...lastTokens) : null;
}

function runMaxLogitPeak(run: LoadedRun): MaxLogitPeak | null {
  let peak: MaxLogitPeak | null = null;
  for (const row of run.metrics) {
    row.max_logit.forEach((value, layer) => {
      if (Number.isFinite(value) && (peak === null || value > peak.value)) peak = { value, tokens: row.tokens, step: row.step, layer, head: null };
    });
  }
  for (const row of run.headMaxLogits ?? []) {
    // >= so that, at equal values, the per-head file supplies the head index.
    if (peak === null || row.max_logit >= peak.value) {
      peak = { value: row.max_logit, tokens: row.tokens, step: row.step, layer: row.layer, head: row.head };
    }
  }
  return peak;
}

export function runStats(run: LoadedRun, matchedTokens: number | null): RunStats {
  const { summary, metrics } = run;
  const evalValues: RunStats['eval'] = {};
  for (const [task, result] of Object.entries(run.evalResults?.tasks ?? {})) {
    for (const [metric, m] of Object.entries(result.metrics)) {
      if (m.value !== null) evalValues[`${task}.${metric}`] = { value: m.value, stderr: m.stderr };
    }
  }
  return {
    run,
    status: summary.status,
    seed: summary.seed ?? (typeof run.config.seed === 'number' ? run.config.seed : null),
    tokens: summary.tokens,
    finalTrainLoss: summary.final_train_loss,
    finalValLoss: summary.final_val_loss,
    bestValLoss: summary.best_val_loss,
    valLossMatched: matchedTokens === null ? null : interpolateAt(valSeries(run), matchedTokens),
    maxLogitPeak: runMaxLogitPeak(run),
    headsClippedTotal: summary.heads_clipped_total ?? metrics.reduce((a, m) => a + m.heads_clipped, 0),
    eval: evalValues,
  };
}

function groupKey(run: LoadedRun): { key: string; shared: Record<string, string> } {
  const flat = flattenConfig(run.config);
  const shared: Record<string, string> = {};
  for (const key of Object.keys(flat).sort()) if (!isSeedOrBookkeepingKey(key)) shared[key] = flat[key];
  return { key: JSON.stringify(shared), shared };
}

/** Learning rates print compactly and without float noise: 0.0003 → 3e-4, 0.0015 → 1.5e-3, 0.02 → 0.02. */
export function formatLr(lr: number): string {
  if (lr !== 0 && Math.abs(lr) < 0.01) {
    const [mantissa, exponent] = lr.toExponential().split('e');
    return `${Number(Number(mantissa).toPrecision(6))}e${Number(exponent)}`;
  }
  return String(Number(lr.toPrecision(6)));
}

/**
 * Labels: the variant alone when unique; `variant@lr=…` when the variant was run at several learning rates;
 * the remaining distinguishing keys appended when even that collides.
 */
function assignLabels(groups: ArmGroup[]): void {
  const byVariant = new Map<string, ArmGroup[]>();
  for (const g of groups) byVariant.set(g.variant, [...(byVariant.get(g.variant) ?? []), g]);
  for (const [variant, members] of byVariant) {
    if (members.length === 1) {
      members[0].label = variant;
      continue;
    }
    const distinctLrs = new Set(members.map((g) => g.lr)).size > 1;
    for (const g of members) g.label = distinctLrs ? `${variant}@lr=${formatLr(g.lr)}` : variant;
    const byLabel = new Map<string, ArmGroup[]>();
    for (const g of members) byLabel.set(g.label, [...(byLabel.get(g.label) ?? []), g]);
    for (const [label, clash] of byLabel) {
      if (clash.length === 1) continue;
      const keys = Object.keys(clash[0].sharedConfig).filter((k) => k !== 'train.lr' && k !== 'model.variant'
        && clash.some((g) => g.sharedConfig[k] !== clash[0].sharedConfig[k]));
      const shown = keys.slice(0, 3);
      clash.forEach((g, i) => {
        const parts = shown.map((k) => `${k}=${(g.sharedConfig[k] ?? 'null').replace(/^"(.*)"$/, '$1')}`);
        if (keys.length > shown.length) parts.push(`#${i + 1}`);
        g.label = `${label}${label.includes('@') ? ',' : '@'}${parts.join(',')}`;
      });
    }
  }
}

function buildGroup(runs: RunStats[], shared: Record<string, string>): ArmGroup {
  const first = runs[0].run;
  const completed = runs.filter((r) => r.status === 'completed');
  const partial = completed.length === 0;
  // Finals of a run that diverged or stopped early are not comparable with finished ones, so they only count
  // when the group has no finished run at all (and the group is then marked partial).
  const population = partial ? runs : completed;
  const statuses: ArmGroup['statuses'] = {};
  for (const r of runs) statuses[r.status] = (statuses[r.status] ?? 0) + 1;

  const evalKeys = [...new Set(runs.flatMap((r) => Object.keys(r.eval)))].sort();
  const evalAggregates: ArmGroup['eval'] = {};
  for (const key of evalKeys) {
    const withEval = population.filter((r) => r.eval[key] !== undefined);
    const stderrs = withEval.map((r) => r.eval[key].stderr).filter((s): s is number => s !== null);
    evalAggregates[key] = {
      ...aggregate(withEval.map((r) => r.eval[key].value)),
      stderr: stderrs.length > 0 ? Math.sqrt(stderrs.reduce((a, s) => a + s * s, 0) / stderrs.length) : null,
    };
  }

  let peak: ArmGroup['maxLogitPeak'] = null;
  for (const r of runs) {
    if (r.maxLogitPeak && (peak === null || r.maxLogitPeak.value > peak.value)) peak = { ...r.maxLogitPeak, runId: r.run.id };
  }

  return {
    label: first.config.model.variant,
    variant: first.config.model.variant,
    lr: first.config.train.lr,
    sharedConfig: shared,
    runs,
    statuses,
    partial,
    finalTrainLoss: aggregate(population.map((r) => r.finalTrainLoss)),
    finalValLoss: aggregate(population.map((r) => r.finalValLoss)),
    bestValLoss: aggregate(population.map((r) => r.bestValLoss)),
    // Every run that reached the common budget counts here, finished or not: the value is taken at equal tokens.
    valLossMatched: aggregate(runs.map((r) => r.valLossMatched)),
    tokens: aggregate(population.map((r) => r.tokens)),
    headsClipped: aggregate(runs.map((r) => r.headsClippedTotal)),
    maxLogitPeak: peak,
    eval: evalAggregates,
    tau: first.config.train.qk_clip.tau,
  };
}

/** Group runs that differ only by seed; groups keep the order in which their first run was given. */
export function groupRuns(runs: LoadedRun[], matchedTokens: number | null): ArmGroup[] {
  const buckets = new Map<string, { shared: Record<string, string>; runs: RunStats[] }>();
  for (const run of runs) {
    const { key, shared } = groupKey(run);
    if (!buckets.has(key)) buckets.set(key, { shared, runs: [] });
    buckets.get(key)!.runs.push(runStats(run, matchedTokens));
  }
  const groups = [...buckets.values()].map((b) => buildGroup(b.runs, b.shared));
  assignLabels(groups);
  return groups;
}

/** A group named by its label, or by its variant when that variant has a single group. */
export function findGroups(name: string, groups: ArmGroup[]): ArmGroup[] {
  const byLabel = groups.filter((g) => g.label === name);
  return byLabel.length > 0 ? byLabel : groups.filter((g) => g.variant === name);
}

export function resolveGroup(name: string, groups: ArmGroup[], what: string): ArmGroup {
  const found = findGroups(name, groups);
  const labels = groups.map((g) => g.label).join(', ');
  if (found.length === 0) throw new UserError(`${what}: unknown arm group \`${name}\` (groups: ${labels})`);
  if (found.length > 1) throw new UserError(`${what}: \`${name}\` matches several arm groups (${found.map((g) => g.label).join(', ')}); use one of those labels`);
  return found[0];
}

/**
 * The baseline each group is compared with. A variant name that covers several groups (e.g. `baseline` run at
 * several learning rates) pairs each group with the baseline group at its own learning rate.
 */
export function baselineFor(name: string, groups: ArmGroup[]): Map<ArmGroup, ArmGroup | null> {
  const candidates = findGroups(name, groups);
  if (candidates.length === 0) {
    throw new UserError(`--baseline: unknown arm group \`${name}\` (groups: ${groups.map((g) => g.label).join(', ')})`);
  }
  const pairing = new Map<ArmGroup, ArmGroup | null>();
  for (const g of groups) {
    if (candidates.length === 1) pairing.set(g, candidates[0]);
    else pairing.set(g, candidates.find((c) => c.lr === g.lr) ?? null);
  }
  return pairing;
}

/** The metric names that work for every group (the `--expect` language and the CSV columns use them). */
export const CORE_METRICS = ['val_loss', 'best_val_loss', 'train_loss', 'val_loss_matched', 'max_logit', 'heads_clipped', 'tokens'] as const;
export type CoreMetric = (typeof CORE_METRICS)[number];

/** Value of a named metric for a group; undefined when the name is unknown, null when the group has no value. */
export function groupMetric(group: ArmGroup, metric: string): number | null | undefined {
  switch (metric) {
    case 'val_loss': return group.finalValLoss.mean;
    case 'best_val_loss': return group.bestValLoss.mean;
    case 'train_loss': return group.finalTrainLoss.mean;
    case 'val_loss_matched': return group.valLossMatched.mean;
    case 'max_logit': return group.maxLogitPeak?.value ?? null;
    case 'heads_clipped': return group.headsClipped.mean;
    case 'tokens': return group.tokens.mean;
    default: return group.eval[metric] ? group.eval[metric].mean : undefined;
  }
}

export function evalMetricNames(groups: ArmGroup[]): string[] {
  return [...new Set(groups.flatMap((g) => Object.keys(g.eval)))].sort();
}

/** Keys, sorted, whose values are not identical across all the flattened records (a missing key differs too). */
export function differingKeys(flats: Record<string, string>[]): string[] {
  const keys = [...new Set(flats.flatMap((f) => Object.keys(f)))].sort();
  return keys.filter((k) => flats.some((f) => (f[k] ?? '(absent)') !== (flats[0][k] ?? '(absent)')));
}

function diffRows(flats: Record<string, string>[], keys: string[]): { key: string; values: string[] }[] {
  return keys.map((key) => ({ key, values: flats.map((f) => f[key] ?? '(absent)') }));
}

/** Rows of the config diff: keys whose values are not identical across all runs. */
export function configDiff(runs: LoadedRun[]): { key: string; values: string[] }[] {
  const flats = runs.map((r) => flattenConfig(r.config));
  return diffRows(flats, differingKeys(flats));
}

/** Same idea for manifests, leaving out the fields that always differ (timestamps). */
export function manifestDiff(runs: LoadedRun[]): { key: string; values: string[] }[] {
  const flats = runs.map((r) => flattenConfig(r.manifest));
  return diffRows(flats, differingKeys(flats).filter((k) => k !== 'started_at' && k !== 'ended_at'));
}
