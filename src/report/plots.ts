// Vega-Lite specs for the comparison plots. Every x axis is tokens seen, so runs with different batch sizes or
// logging intervals line up. Each builder returns a spec, or a note saying why there is nothing to plot.
import { trainSeries, valSeries, type ArmGroup } from './groups';
import { PLOT_FONT } from './render';
import { lrSensitivity, type SensitivityResult } from './sensitivity';
import { cleanSeries, meanCurve, thin, tokenEma, type Point } from './stats';

export interface PlotPlan {
  /** File stem under plots/ (loss → plots/loss.svg, plots/loss.png). */
  name: string;
  title: string;
  /** What the plot shows and how to read it; repeated under the plot in the report. */
  caption: string;
  spec: object | null;
  /** Why the plot was skipped (spec is null). */
  note?: string;
}

/** Points per run kept for raw scatter layers: enough to show noise, small enough for an inline SVG. */
const MAX_RAW_POINTS = 300;
/** Smoothing memory as a fraction of the longest run's tokens. */
const SMOOTHING_FRACTION = 0.03;

const TOKENS_AXIS = { field: 'tokens', type: 'quantitative', title: 'tokens seen', axis: { format: '~s' } };

const BASE_CONFIG = {
  font: PLOT_FONT,
  background: 'white',
  view: { stroke: '#ccc' },
  axis: { labelFontSize: 11, titleFontSize: 12, grid: true, gridColor: '#eee' },
  legend: { labelFontSize: 11, titleFontSize: 12, labelLimit: 260, symbolOpacity: 1 },
  header: { labelFontSize: 12, titleFontSize: 12 },
  title: { fontSize: 15, anchor: 'start', subtitleFontSize: 11, subtitleColor: '#555' },
};

function topLevel(title: string, subtitle: string, body: object): object {
  return {
    $schema: 'https://vega.github.io/schema/vega-lite/v6.json',
    title: { text: title, subtitle },
    config: BASE_CONFIG,
    ...body,
  };
}

function groupColor(groups: ArmGroup[]): object {
  return { field: 'group', type: 'nominal', title: 'arm group', scale: { domain: groups.map((g) => g.label), scheme: 'tableau10' } };
}

/** The y range from the lowest value to the highest starting value, so a late blow-up does not flatten the rest. */
function lossDomain(seriesList: Point[][]): [number, number] | null {
  const all = seriesList.flat().map((p) => p.value);
  if (all.length === 0) return null;
  const lo = Math.min(...all);
  const starts = seriesList.filter((s) => s.length > 0).map((s) => s[0].value);
  let hi = Math.max(...starts);
  if (!(hi > lo)) hi = Math.max(...all);
  if (!(hi > lo)) hi = lo + 1;
  const pad = (hi - lo) * 0.03;
  return [lo - pad, hi + pad];
}

function lossPanel(groups: ArmGroup[], split: 'train' | 'validation', maxTokens: number): { layer: object; series: Point[][] } | null {
  const timeConstant = SMOOTHING_FRACTION * maxTokens;
  const rows: object[] = [];
  const allSeries: Point[][] = [];
  for (const group of groups) {
    const perRun: Point[][] = [];
    for (const stats of group.runs) {
      const raw = split === 'train' ? trainSeries(stats.run) : valSeries(stats.run);
      if (raw.length === 0) continue;
      allSeries.push(raw);
      for (const p of thin(raw, MAX_RAW_POINTS)) rows.push({ kind: 'raw', group: group.label, run: stats.run.id, tokens: p.tokens, loss: p.value });
      // Validation losses are already averages over many tokens; only the noisy training loss is smoothed.
      perRun.push(split === 'train' ? tokenEma(raw, timeConstant) : raw);
    }
    for (const p of thin(meanCurve(perRun), 4 * MAX_RAW_POINTS)) rows.push({ kind: 'line', group: group.label, run: '', tokens: p.tokens, loss: p.mean });
  }
  if (allSeries.length === 0) return null;
  const domain = lossDomain(allSeries);
  const y = { field: 'loss', type: 'quantitative', title: `${split} loss`, scale: { zero: false, nice: false, ...(domain ? { domain } : {}) } };
  return {
    series: allSeries,
    layer: {
      title: split === 'train' ? 'training loss' : 'validation loss',
      width: 360,
      height: 240,
      data: { values: rows },
      layer: [
        {
          transform: [{ filter: "datum.kind === 'raw'" }],
          mark: { type: 'point', filled: true, size: 12, opacity: 0.35, clip: true },
          encoding: { x: TOKENS_AXIS, y, color: groupColor(groups), detail: { field: 'run' } },
        },
        {
          transform: [{ filter: "datum.kind === 'line'" }],
          // Validation is measured rarely (a short run may have one measurement), so its means are also drawn as dots.
          mark: { type: 'line', strokeWidth: 2.2, clip: true, ...(split === 'validation' ? { point: { filled: true, size: 36 } } : {}) },
          encoding: { x: TOKENS_AXIS, y, color: groupColor(groups) },
        },
      ],
    },
  };
}

export function lossPlot(groups: ArmGroup[]): PlotPlan {
  const title = 'Loss vs tokens';
  const maxTokens = Math.max(1, ...groups.flatMap((g) => g.runs.map((r) => r.tokens)));
  const panels = (['train', 'validation'] as const).map((split) => lossPanel(groups, split, maxTokens)).filter((p) => p !== null);
  const caption = 'Points: logged values of every run (at most 300 per run). Lines: mean over the seeds of each arm group; '
    + `training loss smoothed by an exponential moving average with a memory of ${Math.round(SMOOTHING_FRACTION * 100)}% of the longest run's tokens. `
    + 'The y range ends at the highest starting loss, so values after a divergence may run off the top.';
  if (panels.length === 0) return { name: 'loss', title, caption, spec: null, note: 'no run logged a finite training or validation loss' };
  return {
    name: 'loss', title, caption,
    spec: topLevel(title, 'smoothed mean over seeds (lines), raw logged values (points)', { hconcat: panels.map((p) => p.layer), resolve: { scale: { color: 'shared' } } }),
  };
}

export function maxLogitPlot(groups: ArmGroup[]): PlotPlan {
  const title = 'Max attention logit per layer';
  const rows: object[] = [];
  let maxLayers = 0;
  for (const group of groups) {
    for (const stats of group.runs) {
      const layers = Math.max(0, ...stats.run.metrics.map((m) => m.max_logit.length));
      maxLayers = Math.max(maxLayers, layers);
      for (let layer = 0; layer < layers; layer++) {
        // Log scale: only positive values can be drawn.
        const series = cleanSeries(stats.run.metrics.map((m) => ({ tokens: m.tokens, value: m.max_logit[layer] ?? null })))
          .filter((p) => p.value > 0);
        for (const p of thin(series, MAX_RAW_POINTS)) rows.push({ kind: 'line', group: group.label, run: stats.run.id, layer: `layer ${layer}`, tokens: p.tokens, max_logit: p.value });
      }
    }
    rows.push({ kind: 'tau', group: group.label, tau: group.tau });
  }
  const caption = 'Per layer, the largest scaled pre-softmax attention logit over heads, batch and positions (one line per run). '
    + 'Dashed red rule: QK-clip\'s threshold tau from each group\'s config; logit growth far above it is the instability QK-clip and QK-norm address.';
  if (!rows.some((r) => (r as { kind: string }).kind === 'line')) {
    return { name: 'max-logit', title, caption, spec: null, note: 'no run logged a positive max attention logit' };
  }
  const y = { type: 'quantitative', title: 'max attention logit (log)', scale: { type: 'log' } };
  const layerDomain = Array.from({ length: maxLayers }, (_, i) => `layer ${i}`);
  return {
    name: 'max-logit', title, caption,
    spec: topLevel(title, 'one panel per arm group; dashed rule: QK-clip tau', {
      data: { values: rows },
      facet: { field: 'group', type: 'nominal', title: null, sort: groups.map((g) => g.label) },
      columns: Math.min(3, groups.length),
      spec: {
        width: 260,
        height: 180,
        layer: [
          {
            transform: [{ filter: "datum.kind === 'line'" }],
            mark: { type: 'line', strokeWidth: 1.5, clip: true },
            encoding: {
              x: TOKENS_AXIS,
              y: { ...y, field: 'max_logit' },
              color: { field: 'layer', type: 'nominal', title: 'layer', scale: { domain: layerDomain, scheme: 'viridis' } },
              detail: { field: 'run' },
            },
          },
          {
            transform: [{ filter: "datum.kind === 'tau'" }],
            mark: { type: 'rule', color: '#c0392b', strokeDash: [5, 4], strokeWidth: 1.5 },
            encoding: { y: { ...y, field: 'tau' } },
          },
        ],
      },
    }),
  };
}

export function headsClippedPlot(groups: ArmGroup[]): PlotPlan {
  const title = 'Heads clipped per step';
  const rows: object[] = [];
  const neverClipped: string[] = [];
  for (const group of groups) {
    for (const stats of group.runs) {
      const series = cleanSeries(stats.run.metrics.map((m) => ({ tokens: m.tokens, value: m.heads_clipped })));
      // Runs that never clipped would only stack flat lines on zero; the caption names them instead.
      if (!series.some((p) => p.value > 0)) {
        neverClipped.push(stats.run.id);
        continue;
      }
      for (const p of thin(series, MAX_RAW_POINTS)) rows.push({ group: group.label, run: stats.run.id, tokens: p.tokens, heads: p.value });
    }
  }
  const runCount = groups.reduce((a, g) => a + g.runs.length, 0);
  const caption = 'How many attention heads QK-clip rescaled at each logged step (one line per run).'
    + (neverClipped.length > 0 ? ` No head was clipped in: ${neverClipped.join(', ')}.` : '');
  if (rows.length === 0) return { name: 'heads-clipped', title, caption, spec: null, note: `no head was clipped in any of the ${runCount} runs` };
  return {
    name: 'heads-clipped', title, caption,
    spec: topLevel(title, 'QK-clip rescalings at each logged step', {
      width: 560,
      height: 220,
      data: { values: rows },
      mark: { type: 'line', strokeWidth: 1.3, interpolate: 'step-after' },
      encoding: {
        x: TOKENS_AXIS,
        y: { field: 'heads', type: 'quantitative', title: 'heads clipped', axis: { tickMinStep: 1, format: 'd' } },
        color: groupColor(groups),
        detail: { field: 'run' },
      },
    }),
  };
}

export function accuracyPlot(groups: ArmGroup[]): PlotPlan {
  const title = 'Downstream accuracy vs tokens';
  const caption = 'From eval/by-step.csv: one line per run, error bars ± one standard error, grey dashed rule at the task\'s chance level (where eval/results.json gives it).';
  const rows: object[] = [];
  const chance = new Map<string, number>();
  const panels = new Set<string>();
  for (const group of groups) {
    for (const stats of group.runs) {
      for (const [task, result] of Object.entries(stats.run.evalResults?.tasks ?? {})) if (result.chance !== null) chance.set(task, result.chance);
      for (const p of stats.run.evalByStep) {
        if (p.value === null) continue;
        panels.add(`${p.task}\u0000${p.metric}`);
        const se = p.stderr ?? 0;
        rows.push({ kind: 'point', group: group.label, run: stats.run.id, task: p.task, metric: p.metric, tokens: p.tokens, value: p.value, lo: p.value - se, hi: p.value + se });
      }
    }
  }
  if (rows.length === 0) return { name: 'accuracy', title, caption, spec: null, note: 'no run has eval/by-step.csv' };
  for (const panel of panels) {
    const [task, metric] = panel.split('\u0000');
    if (chance.has(task)) rows.push({ kind: 'chance', task, metric, chance: chance.get(task) });
  }
  // The row header names the metric, so the y axis needs no title; padding keeps edge error bars whole.
  const value = { type: 'quantitative', title: null, scale: { zero: false, padding: 8 } };
  const tokensX = { ...TOKENS_AXIS, scale: { padding: 12 } };
  return {
    name: 'accuracy', title, caption,
    spec: topLevel(title, 'one panel per task (columns) and metric (rows)', {
      data: { values: rows },
      facet: { column: { field: 'task', type: 'nominal', title: null }, row: { field: 'metric', type: 'nominal', title: null } },
      spec: {
        width: 240,
        height: 160,
        layer: [
          {
            transform: [{ filter: "datum.kind === 'point'" }],
            mark: { type: 'line', point: { filled: true, size: 25 } },
            encoding: { x: tokensX, y: { ...value, field: 'value' }, color: groupColor(groups), detail: { field: 'run' } },
          },
          {
            transform: [{ filter: "datum.kind === 'point'" }],
            mark: { type: 'rule', opacity: 0.6 },
            encoding: { x: tokensX, y: { ...value, field: 'lo' }, y2: { field: 'hi' }, color: groupColor(groups), detail: { field: 'run' } },
          },
          {
            transform: [{ filter: "datum.kind === 'chance'" }],
            mark: { type: 'rule', color: '#888', strokeDash: [4, 4] },
            encoding: { y: { ...value, field: 'chance' } },
          },
        ],
      },
      resolve: { scale: { y: 'independent' } },
    }),
  };
}

/** A filled × (an outline, not two strokes), so the plot and its legend draw it the same way as the filled dots. */
const DIVERGED_SHAPE = 'M-1,-0.6L-0.6,-1L0,-0.4L0.6,-1L1,-0.6L0.4,0L1,0.6L0.6,1L0,0.4L-0.6,1L-1,0.6L-0.4,0Z';

/**
 * Where "diverged" markers go on a linear loss axis: a band above every finite value, one row per series so that
 * two series diverging at the same learning rate do not hide each other.
 */
function divergedBand(values: number[], seriesCount: number): { rowY: (series: number) => number; domain: [number, number] } {
  const lo = values.length > 0 ? Math.min(...values) : 0;
  const hi = values.length > 0 ? Math.max(...values) : 1;
  const span = hi > lo ? hi - lo : Math.max(0.05 * Math.abs(hi), 0.1);
  const rowY = (series: number) => hi + (0.2 + 0.08 * series) * span;
  return { rowY, domain: [lo - 0.06 * span, rowY(seriesCount - 1) + 0.1 * span] };
}

/**
 * Final validation loss and peak max logit against learning rate, one line per series (the sensitivity view of
 * Wortsman et al. 2023). Means over completed seeds with ± one standard error; diverged seeds are drawn as crosses,
 * never dropped: above the loss curve (they have no final loss) and at their own peak logit.
 */
export function lrSensitivityPlot(groups: ArmGroup[], sensitivity: SensitivityResult | null = lrSensitivity(groups)): PlotPlan {
  const title = 'Learning-rate sensitivity';
  const caption = 'Left: final validation loss; right: peak max attention logit (log scale), against peak learning rate (log scale), one line per series. '
    + 'Dots: mean over the completed seeds, bars ± one standard error, n beside each dot. Ring: the best learning rate of each series '
    + '(lowest mean final validation loss among learning rates where no seed diverged). Crosses: diverged seeds, '
    + 'drawn above the loss curve with the count of diverged seeds (a diverged run has no final loss) and at the peak logit they reached.';
  if (sensitivity === null) return { name: 'lr-sensitivity', title, caption, spec: null, note: 'all arms use the same learning rate' };

  const MEAN = 'mean over completed seeds', DIVERGED = 'diverged';
  const lossRows: object[] = [];
  const logitRows: object[] = [];
  const finiteLoss: number[] = [];
  const positiveLogit: number[] = [];
  for (const s of sensitivity.series) {
    for (const p of s.points) {
      const loss = p.final_val_loss, logit = p.max_logit_peak;
      if (loss.mean !== null) {
        const se = loss.stderr ?? 0;
        finiteLoss.push(loss.mean - se, loss.mean + se);
        lossRows.push({ marker: MEAN, series: s.label, lr: p.lr, value: loss.mean, lo: loss.mean - se, hi: loss.mean + se, n: `n=${loss.n}`, best: p.best });
      }
      if (logit.mean !== null && logit.mean > 0) {
        const se = logit.stderr ?? 0;
        positiveLogit.push(logit.mean + se);
        // Log scale: a bar reaching zero or below is cut at a tenth of the mean.
        logitRows.push({ marker: MEAN, series: s.label, lr: p.lr, value: logit.mean, lo: Math.max(logit.mean - se, logit.mean / 10), hi: logit.mean + se, n: `n=${logit.n}` });
      }
      for (const d of p.diverged) if (d.max_logit_peak !== null && d.max_logit_peak > 0) positiveLogit.push(d.max_logit_peak);
    }
  }
  const band = divergedBand(finiteLoss, sensitivity.series.length);
  // A diverged run that logged no positive logit still gets a cross, above everything else on the log axis.
  const logitCap = positiveLogit.length > 0 ? 3 * Math.max(...positiveLogit) : 1;
  sensitivity.series.forEach((s, index) => {
    for (const p of s.points) {
      if (p.diverged.length === 0) continue;
      lossRows.push({ marker: DIVERGED, series: s.label, lr: p.lr, value: band.rowY(index), n: `${p.diverged.length}/${p.runs.length} diverged` });
      for (const d of p.diverged) {
        const peak = d.max_logit_peak !== null && d.max_logit_peak > 0 ? d.max_logit_peak : logitCap;
        logitRows.push({ marker: DIVERGED, series: s.label, lr: p.lr, value: peak, run: d.run });
      }
    }
  });

  const lrs = sensitivity.lrs;
  // Ticks only at the learning rates that were run: log-scale default ticks repeat labels like 2e-3 2e-3.
  const x = { field: 'lr', type: 'quantitative', title: 'peak learning rate (log)', scale: { type: 'log', nice: false, padding: 24 }, axis: { values: lrs, format: '~e' } };
  const color = { field: 'series', type: 'nominal', title: 'series', scale: { domain: sensitivity.series.map((s) => s.label), scheme: 'set1' } };
  const shape = { field: 'marker', type: 'nominal', title: null, scale: { domain: [MEAN, DIVERGED], range: ['circle', DIVERGED_SHAPE] } };
  const isMean = { filter: `datum.marker === '${MEAN}'` };
  const isDiverged = { filter: `datum.marker === '${DIVERGED}'` };
  const panel = (rows: object[], y: object, extra: object[]): object => ({
    width: 340,
    height: 240,
    data: { values: rows },
    layer: [
      { transform: [isMean], mark: { type: 'line', strokeWidth: 2 }, encoding: { x, y, color } },
      { transform: [isMean], mark: { type: 'rule', strokeWidth: 1.5 }, encoding: { x, y: { ...y, field: 'lo' }, y2: { field: 'hi' }, color } },
      { transform: [isMean], mark: { type: 'point', filled: true, size: 55, opacity: 1 }, encoding: { x, y, color, shape } },
      { transform: [isMean], mark: { type: 'text', align: 'left', dx: 7, dy: 10, fontSize: 9 }, encoding: { x, y, color, text: { field: 'n' } } },
      { transform: [isDiverged], mark: { type: 'point', filled: true, size: 80, opacity: 1 }, encoding: { x, y, color, shape } },
      ...extra,
    ],
  });
  const lossY = { field: 'value', type: 'quantitative', title: 'final validation loss', scale: { zero: false, nice: false, domain: band.domain } };
  const logitY = { field: 'value', type: 'quantitative', title: 'peak max attention logit (log)', scale: { type: 'log' } };
  const lossPanel = panel(lossRows, lossY, [
    { transform: [isDiverged], mark: { type: 'text', align: 'left', dx: 8, dy: -6, fontSize: 9 }, encoding: { x, y: lossY, color, text: { field: 'n' } } },
    { transform: [isMean, { filter: 'datum.best' }], mark: { type: 'point', filled: false, strokeWidth: 2, size: 260, opacity: 1 }, encoding: { x, y: lossY, color } },
  ]);
  const logitPanel = panel(logitRows, logitY, []);
  const left = sensitivity.series.flatMap((s) => s.points.filter((p) => p.final_val_loss.mean === null && p.diverged.length === 0)
    .map((p) => `${p.group} (${Object.entries(p.statuses).map(([st, n]) => `${st}×${n}`).join(', ')})`));
  return {
    name: 'lr-sensitivity', title,
    caption: left.length > 0 ? `${caption} No completed seed yet: ${left.join('; ')}.` : caption,
    spec: topLevel(title, 'final validation loss and peak max logit vs peak learning rate, mean ± standard error over seeds (Wortsman et al. 2023)', {
      hconcat: [lossPanel, logitPanel],
      resolve: { scale: { color: 'shared', shape: 'shared' } },
    }),
  };
}

export function planPlots(groups: ArmGroup[], sensitivity: SensitivityResult | null = lrSensitivity(groups)): PlotPlan[] {
  return [lossPlot(groups), maxLogitPlot(groups), headsClippedPlot(groups), accuracyPlot(groups), lrSensitivityPlot(groups, sensitivity)];
}
