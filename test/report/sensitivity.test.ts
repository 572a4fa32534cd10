import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../../src/errors';
import { compareRuns, type CompareResult } from '../../src/report/compare';
import type { SensitivitySeries } from '../../src/report/sensitivity';
import { curve, tmpDir, writeExperiment, writeRun, writeSweep, type MetricPoint, type RunSpec } from './fixtures';

const noPlots = { plots: false } as const;

/** Max logit growing to `peak` in the last logged step, so the run's peak is exactly `peak`. */
function withPeak(points: MetricPoint[], peak: number): MetricPoint[] {
  return points.map((p, i) => ({ ...p, maxLogit: [1, (peak * (i + 1)) / points.length] }));
}

type SweepRun = RunSpec & { id: string };

function completed(variant: RunSpec['variant'], lr: number, seed: number, finalVal: number, peak: number): SweepRun {
  return { id: `${variant}-lr${lr}-s${seed}`, variant, lr, seed, points: withPeak(curve(8000, 1000, finalVal), peak), finalVal };
}

function diverged(variant: RunSpec['variant'], lr: number, seed: number, peak: number): SweepRun {
  return {
    id: `${variant}-lr${lr}-s${seed}`, variant, lr, seed, status: 'diverged', divergedAtStep: 5,
    points: withPeak(curve(5000, 1000, 4), peak), finalVal: null,
  };
}

function sectionTitles(markdown: string): string[] {
  return markdown.split('\n').filter((line) => line.startsWith('## ')).map((line) => line.slice(3));
}

function seriesOf(result: CompareResult, label: string): SensitivitySeries {
  const found = result.sensitivity?.series.find((s) => s.label === label);
  if (!found) throw new Error(`no series ${label}`);
  return found;
}

describe('learning-rate sweep', () => {
  let sweep: string;
  let result: CompareResult;
  beforeAll(async () => {
    sweep = writeSweep(path.join(tmpDir(), 'lr-sweep'), [
      completed('baseline', 1e-3, 0, 3.60, 10), completed('baseline', 1e-3, 1, 3.62, 12), completed('baseline', 1e-3, 2, 3.64, 14),
      completed('baseline', 3e-3, 0, 3.30, 20), completed('baseline', 3e-3, 1, 3.40, 30), completed('baseline', 3e-3, 2, 3.35, 40),
      // Lower mean loss than 3e-3 from the two surviving seeds, but one seed diverged: not eligible as the best.
      completed('baseline', 1e-2, 0, 3.20, 60), completed('baseline', 1e-2, 1, 3.22, 70), diverged('baseline', 1e-2, 2, 900),
      diverged('baseline', 3e-2, 0, 1500), diverged('baseline', 3e-2, 1, 2000), diverged('baseline', 3e-2, 2, 2500),
      completed('qk-clip', 1e-2, 0, 3.25, 100), diverged('qk-clip', 1e-2, 1, 400),
      completed('qk-clip', 3e-2, 0, 3.15, 100), diverged('qk-clip', 3e-2, 1, 450),
      completed('qk-norm', 1e-3, 0, 3.50, 5), completed('qk-norm', 1e-3, 1, 3.52, 5),
      completed('qk-norm', 3e-3, 0, 3.30, 6), completed('qk-norm', 3e-3, 1, 3.32, 6),
      completed('qk-norm', 1e-2, 0, 3.10, 7), completed('qk-norm', 1e-2, 1, 3.12, 7),
      completed('qk-norm', 3e-2, 0, 3.00, 8), completed('qk-norm', 3e-2, 1, 3.04, 8),
    ]);
    result = await compareRuns({ inputs: [sweep], ...noPlots });
  });

  test('a sweep folder is read through its run folders and reported into SWEEP_DIR/compare', () => {
    expect(result.outDir).toBe(path.resolve(sweep, 'compare'));
    expect(result.runs).toHaveLength(24);
    expect(result.notStarted).toEqual([]);
    // Ordered by variant, learning rate and seed, whatever the folder names.
    expect(result.groups.map((g) => g.label)).toEqual([
      'baseline@lr=1e-3', 'baseline@lr=3e-3', 'baseline@lr=0.01', 'baseline@lr=0.03', 'qk-clip@lr=0.01', 'qk-clip@lr=0.03',
      'qk-norm@lr=1e-3', 'qk-norm@lr=3e-3', 'qk-norm@lr=0.01', 'qk-norm@lr=0.03',
    ]);
    expect(result.sensitivity!.lrs).toEqual([1e-3, 3e-3, 1e-2, 3e-2]);
    expect(result.sensitivity!.series.map((s) => [s.label, s.points.map((p) => p.lr)])).toEqual([
      ['baseline', [1e-3, 3e-3, 1e-2, 3e-2]], ['qk-clip', [1e-2, 3e-2]], ['qk-norm', [1e-3, 3e-3, 1e-2, 3e-2]],
    ]);
  });

  test('seeds are aggregated per learning rate: mean, standard error and n', () => {
    const at3e3 = seriesOf(result, 'baseline').points[1];
    expect(at3e3.group).toBe('baseline@lr=3e-3');
    expect(at3e3.runs).toEqual(['baseline-lr0.003-s0', 'baseline-lr0.003-s1', 'baseline-lr0.003-s2']);
    // 3.30, 3.40, 3.35: mean 3.35, sample std 0.05, standard error 0.05 / sqrt(3)
    expect(at3e3.final_val_loss.mean).toBeCloseTo(3.35, 12);
    expect(at3e3.final_val_loss.stderr).toBeCloseTo(0.05 / Math.sqrt(3), 12);
    expect(at3e3.final_val_loss.n).toBe(3);
    // peaks 20, 30, 40: mean 30, std 10, standard error 10 / sqrt(3)
    expect(at3e3.max_logit_peak.mean).toBeCloseTo(30, 12);
    expect(at3e3.max_logit_peak.stderr).toBeCloseTo(10 / Math.sqrt(3), 12);
    // Only the two completed seeds at 1e-2 count; the diverged one is listed instead.
    const at1e2 = seriesOf(result, 'baseline').points[2];
    expect(at1e2.final_val_loss).toEqual({ mean: expect.closeTo(3.21, 12), stderr: expect.closeTo(0.01, 12), n: 2 });
    expect(at1e2.max_logit_peak.mean).toBeCloseTo(65, 12);
    // One seed: a mean with no standard error.
    expect(seriesOf(result, 'qk-clip').points[0].final_val_loss).toEqual({ mean: 3.25, stderr: null, n: 1 });
  });

  test('diverged runs are shown, never dropped', () => {
    const baseline = seriesOf(result, 'baseline');
    expect(baseline.points[2].diverged).toEqual([{ run: 'baseline-lr0.01-s2', seed: 2, at_step: 5, tokens: 5000, max_logit_peak: 900 }]);
    const allDiverged = baseline.points[3];
    expect(allDiverged.final_val_loss).toEqual({ mean: null, stderr: null, n: 0 });
    expect(allDiverged.diverged.map((d) => [d.seed, d.max_logit_peak])).toEqual([[0, 1500], [1, 2000], [2, 2500]]);
    expect(allDiverged.statuses).toEqual({ diverged: 3 });

    const md = fs.readFileSync(path.join(result.outDir, 'compare.md'), 'utf8');
    expect(md).toContain('| baseline | 0.01 | 3 | completed×2, diverged×1 | 3.2100 ± 0.0100 (n=2) | 65.0 ± 5.0 (n=2) | 1/3: seed 2 at step 5 (peak 900.0) |  |');
    expect(md).toContain('| baseline | 0.03 | 3 | diverged×3 | diverged | — | 3/3: seed 0 at step 5 (peak 1500.0); seed 1 at step 5 (peak 2000.0); seed 2 at step 5 (peak 2500.0) |  |');
    const csv = fs.readFileSync(path.join(result.outDir, 'sensitivity.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe('series,variant,lr,group,runs,completed,diverged,final_val_loss_mean,final_val_loss_stderr,final_val_loss_n,max_logit_peak_mean,max_logit_peak_stderr,max_logit_peak_n,best');
    expect(csv.find((line) => line.startsWith('baseline,baseline,0.03,'))).toBe('baseline,baseline,0.03,baseline@lr=0.03,3,0,3,,,0,,,0,no');
  });

  test('the best learning rate is the lowest mean loss among learning rates where no seed diverged', () => {
    const baseline = seriesOf(result, 'baseline');
    expect(baseline.best_lr).toBe(3e-3);
    expect(baseline.points.map((p) => p.best)).toEqual([false, true, false, false]);
    expect(baseline.best_at_edge).toBeNull();
    expect(baseline.best_reason).toBe('lowest mean final validation loss of the 2 learning rates where no seed diverged (2 left out: a diverged seed or no completed run)');
    const qkNorm = seriesOf(result, 'qk-norm');
    expect(qkNorm.best_lr).toBe(3e-2);
    expect(qkNorm.best_at_edge).toBe('highest');
    const qkClip = seriesOf(result, 'qk-clip');
    expect(qkClip.best_lr).toBeNull();
    expect(qkClip.best_reason).toBe('every learning rate has a diverged seed');
    expect(qkClip.points.every((p) => !p.best)).toBe(true);

    expect(result.summary).toContain('Best learning rate (lowest mean final validation loss among learning rates where no seed diverged): '
      + 'baseline 3e-3, 3.3500 ± 0.0289 (n=3); qk-clip: none (every learning rate has a diverged seed); qk-norm 0.03, 3.0200 ± 0.0200 (n=2).');
    expect(result.summary).toContain('The best learning rate lies at the edge of the swept range, so the optimum may lie beyond it, for: qk-norm (its highest learning rate).');
    const md = fs.readFileSync(path.join(result.outDir, 'compare.md'), 'utf8');
    expect(md).toContain('| baseline | 3e-3 | 3 | completed×3 | 3.3500 ± 0.0289 (n=3) | 30.0 ± 5.8 (n=3) | — | best |');
    expect(sectionTitles(md)).toEqual(['Summary', 'Arm groups', 'Learning-rate sensitivity', 'Runs', 'Plots']);
    const html = fs.readFileSync(result.report, 'utf8');
    expect(html).toContain('<h2>Learning-rate sensitivity</h2>');
    expect(html).toContain('qk-clip: none (every learning rate has a diverged seed)');
    expect(html).toContain('<td class="num">diverged</td>');
  });

  test('a learning rate with no completed seed is no candidate', async () => {
    const root = tmpDir();
    const dir = writeSweep(path.join(root, 'partial'), [
      completed('baseline', 1e-3, 0, 3.6, 10),
      { ...completed('baseline', 3e-3, 0, 3.1, 10), status: 'running' },
    ]);
    const partial = await compareRuns({ inputs: [dir], ...noPlots });
    const [series] = partial.sensitivity!.series;
    expect(series.points[1].final_val_loss.n).toBe(0);
    expect(series.best_lr).toBe(1e-3);
    expect(series.best_reason).toBe('lowest mean final validation loss of the 1 learning rate where no seed diverged (1 left out: a diverged seed or no completed run); '
      + 'it is the lowest learning rate run, so the optimum may lie beyond the swept range');
  });
});

describe('runs that differ in more than variant, learning rate and seed', () => {
  test('form separate series named by the keys that differ', async () => {
    const root = tmpDir();
    const batch12 = (config: { train: { batch_size: number } }) => { config.train.batch_size = 12; };
    const sweep = writeSweep(path.join(root, 'batch'), [
      completed('baseline', 1e-3, 0, 3.5, 10), completed('baseline', 3e-3, 0, 3.3, 10),
      { ...completed('baseline', 1e-3, 0, 3.4, 10), id: 'big-lr1e-3', configEdit: batch12 },
      { ...completed('baseline', 3e-3, 0, 3.45, 10), id: 'big-lr3e-3', configEdit: batch12 },
      completed('qk-norm', 1e-3, 0, 3.2, 5), completed('qk-norm', 3e-3, 0, 3.1, 5),
    ]);
    const result = await compareRuns({ inputs: [sweep], ...noPlots });
    expect(result.sensitivity!.series.map((s) => [s.label, s.keys, s.best_lr])).toEqual([
      ['baseline (train.batch_size=4)', { 'train.batch_size': '4' }, 3e-3],
      ['baseline (train.batch_size=12)', { 'train.batch_size': '12' }, 1e-3],
      ['qk-norm', {}, 3e-3],
    ]);
  });
});

describe('compare without a learning-rate sweep', () => {
  test('is unchanged: no sensitivity section, table, file or summary line', async () => {
    const root = tmpDir();
    const exp = writeExperiment(path.join(root, 'exp'), 'plain', [
      { name: 'baseline-s0', variant: 'baseline', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3.3), finalVal: 3.4 },
      { name: 'baseline-s1', variant: 'baseline', lr: 1e-3, seed: 1, points: curve(4000, 1000, 3.3), finalVal: 3.5 },
      { name: 'qk-norm-s0', variant: 'qk-norm', lr: 1e-3, seed: 0, status: 'diverged', divergedAtStep: 3, points: curve(3000, 1000, 3.2), finalVal: null },
    ]);
    const result = await compareRuns({ inputs: [exp] });
    expect(result.sensitivity).toBeNull();
    expect(result.groups.map((g) => g.label)).toEqual(['baseline', 'qk-norm']);
    const md = fs.readFileSync(path.join(result.outDir, 'compare.md'), 'utf8');
    expect(sectionTitles(md)).toEqual(['Summary', 'Arm groups', 'Runs', 'Plots']);
    expect(md).not.toContain('sensitivity |');
    expect(result.summary.some((line) => line.includes('learning rate'))).toBe(false);
    expect(fs.readdirSync(result.outDir).sort()).toEqual(['compare.csv', 'compare.md', 'config-diff.md', 'plots', 'report.html']);
    expect(result.plots.find((p) => p.name === 'lr-sensitivity')).toEqual({ name: 'lr-sensitivity', svg: null, png: null, note: 'all arms use the same learning rate' });
    expect(fs.readFileSync(result.report, 'utf8')).not.toContain('<h2>Learning-rate sensitivity</h2>');
  });
});

describe('folders of runs', () => {
  test('any folder of run folders is searched; a sweep run that has not started is reported', async () => {
    const root = tmpDir();
    const sweep = writeSweep(path.join(root, 'sweep'), [completed('baseline', 1e-3, 0, 3.5, 10), completed('baseline', 3e-3, 0, 3.3, 10)]);
    fs.mkdirSync(path.join(sweep, 'runs', 'baseline-lr0.01-s0'));
    // Hidden folders are temporaries and never runs.
    fs.mkdirSync(path.join(sweep, 'runs', '.partial'));
    const result = await compareRuns({ inputs: [sweep], ...noPlots });
    expect(result.runs.map((r) => r.id)).toEqual(['baseline-lr0.001-s0', 'baseline-lr0.003-s0']);
    expect(result.notStarted).toEqual(['sweep/runs/baseline-lr0.01-s0']);
    expect(result.summary).toContain('Not started yet: sweep/runs/baseline-lr0.01-s0.');

    // A plain folder of runs, nested one level deeper (runs/<name>/<run>), compares the same runs.
    const plain = path.join(root, 'plain');
    writeRun(path.join(plain, 'a', 'lr1'), { variant: 'qk-norm', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3.3) });
    writeRun(path.join(plain, 'b', 'lr3'), { variant: 'qk-norm', lr: 3e-3, seed: 0, points: curve(4000, 1000, 3.2) });
    const nested = await compareRuns({ inputs: [plain], ...noPlots });
    expect(nested.runs.map((r) => r.id)).toEqual(['lr1', 'lr3']);
    expect(nested.sensitivity!.series.map((s) => s.label)).toEqual(['qk-norm']);
    expect(nested.outDir).toBe(path.resolve(plain, 'compare'));
  });

  test('a folder with no run folder below it is one line naming it, exit 2', async () => {
    const empty = path.join(tmpDir(), 'empty');
    fs.mkdirSync(path.join(empty, 'runs'), { recursive: true });
    let error: unknown;
    try {
      await compareRuns({ inputs: [empty], ...noPlots });
    } catch (err) {
      error = err;
    }
    expect(error).toBeInstanceOf(UserError);
    expect((error as UserError).exitCode).toBe(2);
    expect((error as UserError).message).toBe(`${empty} is neither a run folder (config.resolved.yaml, summary.json) nor an experiment folder (experiment.json), and no run folder was found below it`);
  });
});
