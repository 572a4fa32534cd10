// `mlactl compare`: load runs and experiments, group seeds, write tables, plots and report.html, check gates.
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';
import { evaluateGates, type GateResult } from './expect';
import {
  baselineFor, commonValTokens, configDiff, evalMetricNames, groupRuns, manifestDiff, type ArmGroup,
} from './groups';
import { renderHtmlReport, type HtmlPlot } from './html';
import { loadInputs } from './load';
import { planPlots } from './plots';
import { renderSvgs, svgToPng } from './render';
import { lrSensitivity, sensitivitySummary, type SensitivityResult } from './sensitivity';
import type { Aggregate } from './stats';
import { summarise } from './summary';
import {
  baselineDeltas, baselineTable, diffTable, evalTable, formatTokens, gateTable, groupCsv, groupTable, markdownTable,
  runTable, sensitivityCsv, sensitivityTable, type BaselineDelta, type Table,
} from './tables';
import type { LoadedRun, RunStatus } from './types';

export interface CompareOptions {
  /** Run folders and/or experiment folders (expanded to their arms). */
  inputs: string[];
  /** Output folder; default `<first input>/compare` for an experiment, else `./compare`. */
  out?: string;
  /** Arm group (label or variant name) the others are compared against. */
  baseline?: string;
  /** Gates in the language of docs/compare.md; any failure throws ExpectationError (exit 1) after writing. */
  expect?: string[];
  /** Compare runs even when their tokenizers or validation sets differ. */
  force?: boolean;
  /** Draw the plots (default true); false writes only tables and the report, for callers that need just numbers. */
  plots?: boolean;
}

export interface GroupResult {
  label: string;
  variant: string;
  lr: number;
  runs: string[];
  statuses: Partial<Record<RunStatus, number>>;
  partial: boolean;
  tokens: Aggregate;
  final_train_loss: Aggregate;
  final_val_loss: Aggregate;
  best_val_loss: Aggregate;
  val_loss_matched: Aggregate;
  max_logit_peak: number | null;
  heads_clipped_per_run: Aggregate;
  eval: Record<string, Aggregate & { stderr: number | null }>;
  baseline: string | null;
  deltas: Record<string, number | null> | null;
}

export interface RunResult {
  id: string;
  dir: string;
  group: string;
  seed: number | null;
  status: RunStatus;
  tokens: number;
  final_train_loss: number | null;
  final_val_loss: number | null;
  best_val_loss: number | null;
  val_loss_matched: number | null;
  max_logit_peak: number | null;
  heads_clipped: number;
  diverged_at_step: number | null;
  has_eval: boolean;
}

export interface PlotResult {
  name: string;
  svg: string | null;
  png: string | null;
  note: string | null;
}

export interface CompareResult {
  outDir: string;
  report: string;
  files: string[];
  /** The arm-group table in Markdown, as printed by the command. */
  headline: string;
  summary: string[];
  warnings: string[];
  /** Token budget at which `val_loss_matched` is read (null without validation losses). */
  matchedTokens: number | null;
  groups: GroupResult[];
  runs: RunResult[];
  /** Experiment arms that have no run folder yet, as `experiment/arm`. */
  notStarted: string[];
  /** Final loss and peak logit against learning rate, per series; null unless the runs differ in `train.lr`. */
  sensitivity: SensitivityResult | null;
  gates: GateResult[];
  plots: PlotResult[];
}

/** Thrown after the report is written when at least one `--expect` gate fails; exit code 1. */
export class ExpectationError extends UserError {
  constructor(public readonly failures: GateResult[], public readonly result: CompareResult) {
    super(`${failures.length} of ${result.gates.length} expectation(s) failed: ${failures.map((f) => f.message).join('; ')}`, 1);
    this.name = 'ExpectationError';
  }
}

function shortHash(hash: string): string {
  return hash.length > 12 ? hash.slice(0, 12) : hash;
}

/**
 * Runs trained on different tokenizers or validated on different data have incomparable losses. Returns the
 * one-line description of each difference (empty when all agree).
 */
export function comparabilityProblems(runs: LoadedRun[]): string[] {
  const problems: string[] = [];
  const checks: [keyof LoadedRun['manifest'] & string, string][] = [['tokenizer_hash', 'tokenizer'], ['val_hash', 'validation data']];
  for (const [key, what] of checks) {
    const byHash = new Map<string, string[]>();
    for (const run of runs) {
      const hash = String(run.manifest[key]);
      byHash.set(hash, [...(byHash.get(hash) ?? []), run.id]);
    }
    if (byHash.size > 1) {
      const parts = [...byHash.entries()].map(([hash, ids]) => `${ids.join(', ')} ${ids.length === 1 ? 'has' : 'have'} ${shortHash(hash)}`);
      problems.push(`runs differ in ${what} (manifest.${key}): ${parts.join('; ')}`);
    }
  }
  return problems;
}

function defaultOutDir(inputs: string[], firstHoldsRuns: boolean): string {
  return firstHoldsRuns ? path.join(inputs[0], 'compare') : path.resolve('compare');
}

function groupResult(g: ArmGroup, delta: BaselineDelta | undefined): GroupResult {
  return {
    label: g.label,
    variant: g.variant,
    lr: g.lr,
    runs: g.runs.map((r) => r.run.id),
    statuses: g.statuses,
    partial: g.partial,
    tokens: g.tokens,
    final_train_loss: g.finalTrainLoss,
    final_val_loss: g.finalValLoss,
    best_val_loss: g.bestValLoss,
    val_loss_matched: g.valLossMatched,
    max_logit_peak: g.maxLogitPeak?.value ?? null,
    heads_clipped_per_run: g.headsClipped,
    eval: g.eval,
    baseline: delta?.baseline?.label ?? null,
    deltas: delta ? delta.deltas : null,
  };
}

function runResults(groups: ArmGroup[]): RunResult[] {
  return groups.flatMap((g) => g.runs.map((r) => ({
    id: r.run.id,
    dir: r.run.dir,
    group: g.label,
    seed: r.seed,
    status: r.status,
    tokens: r.tokens,
    final_train_loss: r.finalTrainLoss,
    final_val_loss: r.finalValLoss,
    best_val_loss: r.bestValLoss,
    val_loss_matched: r.valLossMatched,
    max_logit_peak: r.maxLogitPeak?.value ?? null,
    heads_clipped: r.headsClippedTotal,
    diverged_at_step: r.run.summary.diverged_at_step,
    has_eval: r.run.evalResults !== null,
  })));
}

async function writePlots(groups: ArmGroup[], sensitivity: SensitivityResult | null, outDir: string, warnings: string[], draw: boolean): Promise<{ html: HtmlPlot[]; results: PlotResult[] }> {
  const plans = planPlots(groups, sensitivity).map((p) => (draw || p.spec === null ? p : { ...p, spec: null, note: 'plots were turned off' }));
  const drawable = plans.filter((p) => p.spec !== null);
  let rendered: Awaited<ReturnType<typeof renderSvgs>> = [];
  try {
    rendered = await renderSvgs(drawable.map((p) => p.spec as object));
  } catch (err) {
    warnings.push(`plots were not drawn: ${(err as Error).message}`);
  }
  const plotDir = path.join(outDir, 'plots');
  fs.mkdirSync(plotDir, { recursive: true });
  const html: HtmlPlot[] = [];
  const results: PlotResult[] = [];
  for (const plan of plans) {
    const index = drawable.indexOf(plan);
    const outcome = index >= 0 ? rendered[index] : undefined;
    let note = plan.note ?? null;
    let svg: string | null = null;
    if (outcome && 'svg' in outcome) svg = outcome.svg;
    else if (outcome && 'error' in outcome) note = `rendering failed: ${outcome.error}`;
    else if (index >= 0) note = 'rendering failed';
    if (svg === null) {
      html.push({ name: plan.name, title: plan.title, caption: plan.caption, svg: null, note: note ?? 'no data' });
      results.push({ name: plan.name, svg: null, png: null, note });
      continue;
    }
    const svgPath = path.join(plotDir, `${plan.name}.svg`);
    const pngPath = path.join(plotDir, `${plan.name}.png`);
    fs.writeFileSync(svgPath, svg);
    fs.writeFileSync(pngPath, svgToPng(svg));
    html.push({ name: plan.name, title: plan.title, caption: plan.caption, svg });
    results.push({ name: plan.name, svg: svgPath, png: pngPath, note: null });
  }
  return { html, results };
}

function markdownReport(parts: {
  title: string; summary: string[]; warnings: string[]; gates: GateResult[];
  tables: { title: string; table: Table; note?: string }[]; plots: PlotResult[]; plotTitles: Map<string, string>;
}): string {
  const lines: string[] = [`# ${parts.title}`, ''];
  for (const w of parts.warnings) lines.push(`> **Warning:** ${w}`, '');
  lines.push('## Summary', '', ...parts.summary.map((s) => `- ${s}`), '');
  if (parts.gates.length > 0) lines.push('## Expectations', '', markdownTable(gateTable(parts.gates)), '');
  for (const t of parts.tables) {
    lines.push(`## ${t.title}`, '');
    if (t.note) lines.push(t.note, '');
    lines.push(markdownTable(t.table), '');
  }
  lines.push('## Plots', '');
  for (const p of parts.plots) {
    const title = parts.plotTitles.get(p.name) ?? p.name;
    if (p.png) lines.push(`### ${title}`, '', `![${title}](plots/${p.name}.png)`, '', `SVG: [plots/${p.name}.svg](plots/${p.name}.svg)`, '');
    else lines.push(`### ${title}`, '', `Skipped: ${p.note ?? 'no data'}.`, '');
  }
  lines.push('Config differences: [config-diff.md](config-diff.md). Full report: [report.html](report.html).', '');
  return lines.join('\n');
}

function configDiffMarkdown(runs: LoadedRun[]): string {
  const ids = runs.map((r) => r.id);
  const config = configDiff(runs), manifest = manifestDiff(runs);
  return [
    '# Config differences', '',
    'Keys of config.resolved.yaml whose values differ between the compared runs (JSON-encoded values).', '',
    config.length > 0 ? markdownTable(diffTable(config, ids)) : 'The resolved configs are identical.', '',
    '## Manifest differences', '',
    manifest.length > 0 ? markdownTable(diffTable(manifest, ids)) : 'The manifests agree on every field but the timestamps.', '',
  ].join('\n');
}

const SENSITIVITY_NOTE = 'Final validation loss and peak max attention logit per learning rate: mean ± standard error over the completed seeds '
  + '(n = seeds with a value). Diverged seeds are never dropped: they are listed with the step they diverged at and the logit peak they reached, '
  + 'and a learning rate at which every seed diverged reads "diverged". The best learning rate of a series has the lowest mean final '
  + 'validation loss among the learning rates where no seed diverged. Runs that differ in config keys other than the variant, the learning '
  + 'rate and the seeds form separate series, named by those keys.';

export async function compareRuns(options: CompareOptions): Promise<CompareResult> {
  const { runs, notStarted, firstHoldsRuns } = loadInputs(options.inputs);
  const warnings: string[] = [];
  const problems = comparabilityProblems(runs);
  if (problems.length > 0) {
    if (!options.force) throw new UserError(`${problems.join('; ')}; their losses are not comparable (pass --force to compare anyway)`);
    warnings.push(...problems.map((p) => `compared with --force although ${p}`));
  }

  const matchedTokens = commonValTokens(runs);
  const groups = groupRuns(runs, matchedTokens);
  const sensitivity = lrSensitivity(groups);
  const evalNames = evalMetricNames(groups);
  const pairing = options.baseline ? baselineFor(options.baseline, groups) : null;
  // Bad gates are input errors and must stop the command before anything is written.
  const gates = evaluateGates(options.expect ?? [], groups);

  const outDir = path.resolve(options.out ?? defaultOutDir(options.inputs, firstHoldsRuns));
  fs.mkdirSync(outDir, { recursive: true });
  const { html: htmlPlots, results: plotResults } = await writePlots(groups, sensitivity, outDir, warnings, options.plots ?? true);

  const deltas = pairing ? baselineDeltas(groups, pairing, evalNames) : null;
  const summary = [...summarise(groups, notStarted), ...(sensitivity ? sensitivitySummary(sensitivity) : [])];
  const headlineTable = groupTable(groups, matchedTokens);
  const tables: { title: string; table: Table; note?: string }[] = [{
    title: 'Arm groups',
    table: headlineTable,
    note: 'Arm groups are runs that differ only by seed; values are mean ± std over seeds (n = runs with a value). '
      + 'Final losses count completed runs only; † marks a group without a completed run, whose finals come from unfinished runs. '
      + `"val loss @ ${formatTokens(matchedTokens)} tokens" is every run's validation loss interpolated at the largest token count all completed runs reached, so runs of different lengths or batch sizes are compared at equal tokens.`,
  }];
  if (sensitivity) {
    tables.push({
      title: 'Learning-rate sensitivity',
      table: sensitivityTable(sensitivity),
      note: SENSITIVITY_NOTE,
    });
  }
  const evalT = evalTable(groups, evalNames);
  if (evalT) tables.push({ title: 'Downstream evaluation', table: evalT, note: 'mean ± std over seeds (n); se: root mean square of the runs\' own standard errors.' });
  if (deltas) tables.push({ title: `Differences against ${options.baseline}`, table: baselineTable(deltas, evalNames), note: 'Group mean minus baseline mean; negative loss differences are improvements.' });
  tables.push({ title: 'Runs', table: runTable(groups), note: 'Every run compared, whatever its status.' });

  const title = groups.length <= 4 ? `mlactl compare: ${groups.map((g) => g.label).join(' vs ')}` : `mlactl compare: ${groups.length} arm groups, ${runs.length} runs`;
  const files: string[] = [];
  const write = (name: string, content: string): void => {
    const file = path.join(outDir, name);
    fs.writeFileSync(file, content);
    files.push(file);
  };
  const plotTitles = new Map(htmlPlots.map((p) => [p.name, p.title]));
  write('compare.md', markdownReport({ title, summary, warnings, gates, tables, plots: plotResults, plotTitles }));
  write('compare.csv', groupCsv(groups, deltas, evalNames, matchedTokens));
  if (sensitivity) write('sensitivity.csv', sensitivityCsv(sensitivity));
  write('config-diff.md', configDiffMarkdown(runs));
  const ids = runs.map((r) => r.id);
  write('report.html', renderHtmlReport({
    title,
    generatedAt: new Date().toISOString(),
    inputs: options.inputs,
    summary,
    warnings,
    gates,
    tables,
    plots: htmlPlots,
    configDiff: diffTable(configDiff(runs), ids),
    manifestDiff: diffTable(manifestDiff(runs), ids),
    runs,
  }));
  for (const p of plotResults) for (const f of [p.svg, p.png]) if (f) files.push(f);

  const result: CompareResult = {
    outDir,
    report: path.join(outDir, 'report.html'),
    files,
    headline: markdownTable(headlineTable),
    summary,
    warnings,
    matchedTokens,
    groups: groups.map((g) => groupResult(g, deltas?.find((d) => d.group === g))),
    runs: runResults(groups),
    notStarted,
    sensitivity,
    gates,
    plots: plotResults,
  };
  const failures = gates.filter((g) => !g.passed);
  if (failures.length > 0) throw new ExpectationError(failures, result);
  return result;
}
