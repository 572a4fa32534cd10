// The comparison's tables as plain data ({headers, rows} of strings), rendered to Markdown here and to HTML
// in html.ts, plus the per-group CSV.
import { stringify } from 'csv-stringify/sync';
import { formatLr, groupMetric, type ArmGroup, type RunStats } from './groups';
import type { GateResult } from './expect';
import type { SensitivityPoint, SensitivityResult } from './sensitivity';
import type { Aggregate, MeanWithError } from './stats';

export interface Table {
  headers: string[];
  rows: string[][];
  /** Right-align these columns (numbers). */
  numeric?: boolean[];
}

export const DASH = '—';

export function formatNumber(value: number | null | undefined, digits = 4): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return DASH;
  return value.toFixed(digits);
}

/** 1234567 → 1.23M: token counts are read at a glance, not digit by digit. */
export function formatTokens(tokens: number | null | undefined): string {
  if (tokens === null || tokens === undefined || !Number.isFinite(tokens)) return DASH;
  const units: [number, string][] = [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']];
  for (const [size, suffix] of units) if (Math.abs(tokens) >= size) return `${Number((tokens / size).toPrecision(3))}${suffix}`;
  return String(tokens);
}

/** Attention logits span 0.05 (a fresh model) to 1000 (a blow-up): one decimal from 10 up, three significant digits below. */
export function formatLogit(value: number): string {
  if (Math.abs(value) >= 10) return value.toFixed(1);
  return Number(value.toPrecision(3)).toString();
}

export function formatAggregate(agg: Aggregate, digits = 4): string {
  if (agg.mean === null) return DASH;
  const spread = agg.std === null ? '' : ` ± ${agg.std.toFixed(digits)}`;
  return `${agg.mean.toFixed(digits)}${spread} (n=${agg.count})`;
}

export function formatDelta(value: number | null | undefined, digits = 4): string {
  if (value === null || value === undefined || !Number.isFinite(value)) return DASH;
  return `${value >= 0 ? '+' : ''}${value.toFixed(digits)}`;
}

export function formatStatuses(group: ArmGroup): string {
  return Object.entries(group.statuses).map(([status, n]) => (n === 1 && group.runs.length === 1 ? status : `${status}×${n}`)).join(', ');
}

function peakText(group: ArmGroup): string {
  const peak = group.maxLogitPeak;
  if (!peak) return DASH;
  return formatLogit(peak.value);
}

/** The headline: one row per arm group. A dagger marks groups whose finals come from unfinished runs. */
export function groupTable(groups: ArmGroup[], matchedTokens: number | null): Table {
  return {
    headers: ['arm group', 'runs', 'status', 'tokens', 'final train loss', 'final val loss', 'best val loss',
      `val loss @ ${formatTokens(matchedTokens)} tokens`, 'max logit (peak)', 'heads clipped / run'],
    numeric: [false, true, false, true, true, true, true, true, true, true],
    rows: groups.map((g) => [
      g.partial ? `${g.label} †` : g.label,
      String(g.runs.length),
      formatStatuses(g),
      formatTokens(g.tokens.mean),
      formatAggregate(g.finalTrainLoss),
      formatAggregate(g.finalValLoss),
      formatAggregate(g.bestValLoss),
      formatAggregate(g.valLossMatched),
      peakText(g),
      g.headsClipped.mean === null ? DASH : formatAggregate(g.headsClipped, 1),
    ]),
  };
}

/** Downstream metrics: mean ± seed std, and the typical per-run standard error. */
export function evalTable(groups: ArmGroup[], evalNames: string[]): Table | null {
  if (evalNames.length === 0) return null;
  return {
    headers: ['arm group', ...evalNames],
    numeric: [false, ...evalNames.map(() => true)],
    rows: groups.map((g) => [
      g.label,
      ...evalNames.map((name) => {
        const agg = g.eval[name];
        if (!agg || agg.mean === null) return 'no eval';
        return `${formatAggregate(agg)}${agg.stderr === null ? '' : ` se ${agg.stderr.toFixed(4)}`}`;
      }),
    ]),
  };
}

export const DELTA_METRICS = ['val_loss', 'best_val_loss', 'train_loss', 'val_loss_matched'] as const;

export interface BaselineDelta {
  group: ArmGroup;
  baseline: ArmGroup | null;
  /** metric → group mean − baseline mean. */
  deltas: Record<string, number | null>;
}

export function baselineDeltas(groups: ArmGroup[], pairing: Map<ArmGroup, ArmGroup | null>, evalNames: string[]): BaselineDelta[] {
  return groups.map((group) => {
    const baseline = pairing.get(group) ?? null;
    const deltas: Record<string, number | null> = {};
    for (const metric of [...DELTA_METRICS, ...evalNames]) {
      const a = groupMetric(group, metric), b = baseline ? groupMetric(baseline, metric) : null;
      deltas[metric] = typeof a === 'number' && typeof b === 'number' ? a - b : null;
    }
    return { group, baseline, deltas };
  });
}

export function baselineTable(rows: BaselineDelta[], evalNames: string[]): Table {
  const metrics = [...DELTA_METRICS, ...evalNames];
  return {
    headers: ['arm group', 'baseline', ...metrics.map((m) => `Δ ${m}`)],
    numeric: [false, false, ...metrics.map(() => true)],
    rows: rows.map((r) => [r.group.label, r.baseline?.label ?? 'none at this lr', ...metrics.map((m) => formatDelta(r.deltas[m]))]),
  };
}

function runPeakText(stats: RunStats): string {
  const p = stats.maxLogitPeak;
  if (!p) return DASH;
  const where = p.head === null ? `L${p.layer}` : `L${p.layer} H${p.head}`;
  return `${formatLogit(p.value)} (${where} @ ${formatTokens(p.tokens)})`;
}

/** Every run, whatever its status: nothing is dropped from a comparison. */
export function runTable(groups: ArmGroup[]): Table {
  const rows: string[][] = [];
  for (const g of groups) {
    for (const r of g.runs) {
      rows.push([
        r.run.id,
        g.label,
        r.seed === null ? DASH : String(r.seed),
        r.status + (r.run.summary.diverged_at_step !== null ? ` at step ${r.run.summary.diverged_at_step}` : '')
          + (r.run.summaryInferred ? ' (no summary.json yet)' : ''),
        formatTokens(r.tokens),
        formatNumber(r.finalTrainLoss),
        formatNumber(r.finalValLoss),
        formatNumber(r.bestValLoss),
        formatNumber(r.valLossMatched),
        runPeakText(r),
        String(r.headsClippedTotal),
        r.run.evalResults ? `${Object.keys(r.run.evalResults.tasks).length} task(s)` : 'no eval',
      ]);
    }
  }
  return {
    headers: ['run', 'arm group', 'seed', 'status', 'tokens', 'final train loss', 'final val loss', 'best val loss', 'val loss @ matched', 'max logit peak', 'heads clipped', 'eval'],
    numeric: [false, false, true, false, true, true, true, true, true, true, true, false],
    rows,
  };
}

/** `3.4012 ± 0.0100 (n=3)`: mean ± standard error over seeds; no ± with a single seed. */
export function formatMeanWithError(value: MeanWithError, format: (v: number) => string = (v) => v.toFixed(4)): string {
  if (value.mean === null) return DASH;
  return `${format(value.mean)}${value.stderr === null ? '' : ` ± ${format(value.stderr)}`} (n=${value.n})`;
}

/** Logit means and their errors with one decimal from 10 up (as formatLogit), three below. */
function logitDigits(mean: number | null): (v: number) => string {
  return mean !== null && Math.abs(mean) >= 10 ? (v) => v.toFixed(1) : (v) => v.toFixed(3);
}

function pointStatuses(p: SensitivityPoint): string {
  return Object.entries(p.statuses).map(([status, n]) => (n === 1 && p.runs.length === 1 ? status : `${status}×${n}`)).join(', ');
}

function divergedText(p: SensitivityPoint): string {
  if (p.diverged.length === 0) return DASH;
  const runs = p.diverged.map((d) => {
    const who = d.seed === null ? d.run : `seed ${d.seed}`;
    const at = d.at_step === null ? '' : ` at step ${d.at_step}`;
    const peak = d.max_logit_peak === null ? '' : ` (peak ${formatLogit(d.max_logit_peak)})`;
    return `${who}${at}${peak}`;
  });
  return `${p.diverged.length}/${p.runs.length}: ${runs.join('; ')}`;
}

/**
 * One row per series and learning rate. A learning rate at which every seed diverged reads "diverged" in the loss
 * column; a partly diverged one keeps the mean of its completed seeds and lists the diverged ones beside it.
 */
export function sensitivityTable(result: SensitivityResult): Table {
  const rows: string[][] = [];
  for (const s of result.series) {
    for (const p of s.points) {
      const allDiverged = p.diverged.length === p.runs.length;
      rows.push([
        s.label,
        formatLr(p.lr),
        String(p.runs.length),
        pointStatuses(p),
        allDiverged ? 'diverged' : formatMeanWithError(p.final_val_loss),
        formatMeanWithError(p.max_logit_peak, logitDigits(p.max_logit_peak.mean)),
        divergedText(p),
        p.best ? 'best' : '',
      ]);
    }
  }
  return {
    headers: ['series', 'lr', 'runs', 'status', 'final val loss (mean ± se)', 'max logit peak (mean ± se)', 'diverged', 'best lr'],
    numeric: [false, true, true, false, true, true, false, false],
    rows,
  };
}

/** sensitivity.csv: the table's numbers, one row per series and learning rate. */
export function sensitivityCsv(result: SensitivityResult): string {
  const records = result.series.flatMap((s) => s.points.map((p) => ({
    series: s.label,
    variant: s.variant,
    lr: formatLr(p.lr),
    group: p.group,
    runs: p.runs.length,
    completed: p.statuses.completed ?? 0,
    diverged: p.diverged.length,
    final_val_loss_mean: p.final_val_loss.mean ?? '',
    final_val_loss_stderr: p.final_val_loss.stderr ?? '',
    final_val_loss_n: p.final_val_loss.n,
    max_logit_peak_mean: p.max_logit_peak.mean ?? '',
    max_logit_peak_stderr: p.max_logit_peak.stderr ?? '',
    max_logit_peak_n: p.max_logit_peak.n,
    best: p.best ? 'yes' : 'no',
  })));
  return stringify(records, { header: true });
}

export function gateTable(gates: GateResult[]): Table {
  return {
    headers: ['gate', 'result', 'values'],
    rows: gates.map((g) => [g.expression, g.passed ? 'pass' : 'FAIL', g.message.slice(g.expression.length + 2)]),
  };
}

export function diffTable(rows: { key: string; values: string[] }[], columnNames: string[]): Table {
  return { headers: ['key', ...columnNames], rows: rows.map((r) => [r.key, ...r.values]) };
}

function escapeMarkdownCell(text: string): string {
  return text.replace(/\|/g, '\\|').replace(/\n/g, ' ');
}

export function markdownTable(table: Table): string {
  const align = table.headers.map((_, i) => (table.numeric?.[i] ? '---:' : '---'));
  const line = (cells: string[]): string => `| ${cells.map(escapeMarkdownCell).join(' | ')} |`;
  return [line(table.headers), `| ${align.join(' | ')} |`, ...table.rows.map(line)].join('\n');
}

/** compare.csv: one row per arm group with raw numbers (empty where unknown), for spreadsheets and scripts. */
export function groupCsv(groups: ArmGroup[], deltas: BaselineDelta[] | null, evalNames: string[], matchedTokens: number | null): string {
  const aggColumns = (prefix: string, agg: Aggregate): Record<string, number | string> => ({
    [`${prefix}_mean`]: agg.mean ?? '',
    [`${prefix}_std`]: agg.std ?? '',
    [`${prefix}_n`]: agg.count,
  });
  const records = groups.map((g) => {
    const record: Record<string, number | string> = {
      group: g.label,
      variant: g.variant,
      lr: formatLr(g.lr),
      runs: g.runs.length,
      statuses: formatStatuses(g),
      partial: g.partial ? 'yes' : 'no',
      ...aggColumns('tokens', g.tokens),
      ...aggColumns('final_train_loss', g.finalTrainLoss),
      ...aggColumns('final_val_loss', g.finalValLoss),
      ...aggColumns('best_val_loss', g.bestValLoss),
      matched_tokens: matchedTokens ?? '',
      ...aggColumns('val_loss_matched', g.valLossMatched),
      max_logit_peak: g.maxLogitPeak?.value ?? '',
      ...aggColumns('heads_clipped_per_run', g.headsClipped),
    };
    for (const name of evalNames) {
      const agg = g.eval[name];
      record[`${name}_mean`] = agg?.mean ?? '';
      record[`${name}_std`] = agg?.std ?? '';
      record[`${name}_stderr`] = agg?.stderr ?? '';
      record[`${name}_n`] = agg?.count ?? 0;
    }
    const delta = deltas?.find((d) => d.group === g);
    if (deltas) {
      record.baseline = delta?.baseline?.label ?? '';
      for (const [metric, value] of Object.entries(delta?.deltas ?? {})) record[`delta_${metric}`] = value ?? '';
    }
    return record;
  });
  const columns = [...new Set(records.flatMap((r) => Object.keys(r)))];
  return stringify(records, { header: true, columns });
}
