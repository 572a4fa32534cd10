import * as fs from 'fs';
import * as path from 'path';
import { compareRuns, type CompareResult } from '../../src/report/compare';
import { commonValTokens, groupRuns } from '../../src/report/groups';
import { loadInputs } from '../../src/report/load';
import { planPlots } from '../../src/report/plots';
import { prefixSvgIds, renderSvgs, svgToPng } from '../../src/report/render';
import { curve, tmpDir, writeRichExperiment, writeRun } from './fixtures';

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);

test('text is drawn in PNGs: a text-only SVG differs from the same SVG without text', () => {
  const frame = (body: string) => `<svg xmlns="http://www.w3.org/2000/svg" width="240" height="60">${body}</svg>`;
  const withText = svgToPng(frame('<text x="10" y="40" font-family="DejaVu Sans, Arial, sans-serif" font-size="28">tokens 1e6</text>'));
  const blank = svgToPng(frame(''));
  expect(withText.subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
  expect(withText.equals(blank)).toBe(false);
  // Glyph outlines compress far worse than a flat white image.
  expect(withText.length).toBeGreaterThan(blank.length + 500);
});

test('renderSvgs reports a broken spec as an error without losing the others', async () => {
  const results = await renderSvgs([
    { data: { values: [{ x: 1, y: 2 }] }, mark: 'point', encoding: { x: { field: 'x', type: 'quantitative' } } },
    { data: { values: [] }, mark: 'no-such-mark' },
  ]);
  expect('svg' in results[0] && results[0].svg.startsWith('<svg')).toBe(true);
  expect('error' in results[1]).toBe(true);
});

test('prefixSvgIds keeps references pointing at their own plot', () => {
  const svg = '<svg><clipPath id="clip1"><rect/></clipPath><g clip-path="url(#clip1)"></g><use href="#clip1"/></svg>';
  expect(prefixSvgIds(svg, 'p2-')).toBe('<svg><clipPath id="p2-clip1"><rect/></clipPath><g clip-path="url(#p2-clip1)"></g><use href="#p2-clip1"/></svg>');
});

describe('plots of a full experiment', () => {
  let result: CompareResult;
  let expDir: string;
  beforeAll(async () => {
    expDir = writeRichExperiment(path.join(tmpDir(), 'rich'));
    result = await compareRuns({ inputs: [expDir], baseline: 'baseline' });
  });

  test('every plot is written as SVG and PNG', () => {
    expect(result.plots.map((p) => [p.name, p.note])).toEqual([
      ['loss', null], ['max-logit', null], ['heads-clipped', null], ['accuracy', null], ['lr-sensitivity', null],
    ]);
    for (const plot of result.plots) {
      const svg = fs.readFileSync(plot.svg!, 'utf8');
      expect(svg.startsWith('<svg')).toBe(true);
      expect(fs.readFileSync(plot.png!).subarray(0, 8).equals(PNG_SIGNATURE)).toBe(true);
    }
    const loss = fs.readFileSync(result.plots[0].svg!, 'utf8');
    for (const text of ['tokens seen', 'training loss', 'validation loss', 'baseline@lr=1e-3', 'qk-norm@lr=3e-3']) expect(loss).toContain(text);
    const sensitivity = fs.readFileSync(result.plots[4].svg!, 'utf8');
    for (const text of ['peak learning rate (log)', 'final validation loss', 'peak max attention logit (log)', '1/1 diverged', 'n=2']) expect(sensitivity).toContain(text);
  });

  test('report.html is one self-contained file with every plot inline', () => {
    const html = fs.readFileSync(result.report, 'utf8');
    expect(html.match(/<figure /g)).toHaveLength(5);
    expect(html.match(/<svg /g)).toHaveLength(5);
    expect(html).not.toMatch(/<script|<link|<img|<iframe|src="http|href="http|url\(http|@import/);
    // Ids are unique across the inline plots.
    const ids = [...html.matchAll(/\bid="([^"]+)"/g)].map((m) => m[1]);
    expect(new Set(ids).size).toBe(ids.length);
    expect(html).toContain('<details><summary>baseline-lr1e-3-s0');
    expect(html).toContain('Diverged: baseline-lr3e-3-s0 (baseline@lr=3e-3, at step 24, after 6k tokens).');
    expect(html).toContain('Differences against baseline');
  });

  test('plot data: tau rule from the config, lr sensitivity per series with diverged runs drawn', () => {
    const { runs } = loadInputs([expDir]);
    const groups = groupRuns(runs, commonValTokens(runs));
    const plans = planPlots(groups);
    const maxLogit = plans[1].spec as { data: { values: { kind: string; group: string; tau?: number }[] } };
    expect(maxLogit.data.values.filter((v) => v.kind === 'tau').map((v) => [v.group, v.tau])).toEqual(
      groups.map((g) => [g.label, 100]));
    const lr = plans[4];
    type Row = { marker: string; series: string; lr: number; value: number; n?: string };
    const [lossPanel, logitPanel] = (lr.spec as { hconcat: { data: { values: Row[] } }[] }).hconcat.map((p) => p.data.values);
    const means = lossPanel.filter((r) => r.marker !== 'diverged');
    // Means over completed seeds: baseline@lr=1e-3 has two; the running qk-norm@lr=3e-3 has none yet and no dot.
    expect(means.map((r) => [r.series, r.lr, r.n])).toEqual([
      ['baseline', 1e-3, 'n=2'], ['qk-clip', 1e-3, 'n=1'], ['qk-clip', 3e-3, 'n=1'], ['qk-norm', 1e-3, 'n=1'],
    ]);
    // curve(…, 3.4) ends its validation at 3.5 and curve(…, 3.45) at 3.55: mean 3.525
    expect(means[0].value).toBeCloseTo(3.525, 12);
    // The diverged baseline@lr=3e-3 is drawn, above the loss curve and at its own logit peak: growing(…, 12) over
    // 24 logged steps reaches 6 + 1.5 * 12 * 23 = 420 in layer 1.
    const divergedLoss = lossPanel.filter((r) => r.marker === 'diverged');
    expect(divergedLoss.map((r) => [r.series, r.lr, r.n])).toEqual([['baseline', 3e-3, '1/1 diverged']]);
    expect(divergedLoss[0].value).toBeGreaterThan(Math.max(...means.map((r) => r.value)));
    expect(logitPanel.filter((r) => r.marker === 'diverged').map((r) => [r.series, r.lr, r.value])).toEqual([['baseline', 3e-3, 420]]);
    expect(lr.caption).toContain('No completed seed yet: qk-norm@lr=3e-3 (running×1).');
  });
});

test('plots without data are skipped with a note', async () => {
  const root = tmpDir();
  const a = writeRun(path.join(root, 'a'), { variant: 'baseline', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3.4), configEdit: (c) => { c.train.qk_clip.tau = 50; } });
  const b = writeRun(path.join(root, 'b'), { variant: 'qk-norm', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3.2).map((p) => ({ ...p, maxLogit: [] })) });
  const result = await compareRuns({ inputs: [a, b], out: path.join(root, 'out') });
  expect(result.plots.map((p) => [p.name, p.note])).toEqual([
    ['loss', null],
    ['max-logit', null],
    ['heads-clipped', 'no head was clipped in any of the 2 runs'],
    ['accuracy', 'no run has eval/by-step.csv'],
    ['lr-sensitivity', 'all arms use the same learning rate'],
  ]);
  const md = fs.readFileSync(path.join(root, 'out', 'compare.md'), 'utf8');
  expect(md).toContain('Skipped: no run has eval/by-step.csv.');
  expect(md).toContain('![Loss vs tokens](plots/loss.png)');
  const html = fs.readFileSync(path.join(root, 'out', 'report.html'), 'utf8');
  expect(html).toContain('Skipped: all arms use the same learning rate.');
  // Each arm group's facet gets the rule at its own config's tau.
  const { runs } = loadInputs([a, b]);
  const spec = planPlots(groupRuns(runs, null))[1].spec as { data: { values: { kind: string; group: string; tau?: number }[] } };
  expect(spec.data.values.filter((v) => v.kind === 'tau').map((v) => [v.group, v.tau])).toEqual([['baseline', 50], ['qk-norm', 100]]);
});
