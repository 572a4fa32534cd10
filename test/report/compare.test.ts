import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../../src/errors';
import { compareRuns, ExpectationError } from '../../src/report/compare';
import { curve, tmpDir, writeExperiment, writeRun, type MetricPoint, type RunSpec } from './fixtures';

// Plots are drawn and checked in plots.test.ts and browser.test.ts; here only the numbers matter.
const noPlots = { plots: false } as const;

async function rejection(promise: Promise<unknown>): Promise<UserError> {
  try {
    await promise;
  } catch (err) {
    if (err instanceof UserError) return err;
    throw err;
  }
  throw new Error('expected a UserError');
}

/** compare.csv as records; values stay strings so the test compares them as numbers explicitly. */
function readCsvRecords(file: string): Record<string, string>[] {
  const [header, ...lines] = fs.readFileSync(file, 'utf8').trim().split('\n');
  const columns = header.split(',');
  return lines.map((line) => Object.fromEntries(line.split(',').map((cell, i) => [columns[i], cell])));
}

const cloze = (acc: number, stderr = 0.02) => ({ 'brown-cloze': { chance: 0.25, metrics: { acc: { value: acc, stderr } } } });

describe('seed aggregation', () => {
  let expDir: string;
  beforeAll(() => {
    const root = tmpDir();
    const arm = (variant: 'baseline' | 'qk-norm', seed: number, finalVal: number, acc: number | null): RunSpec & { name: string } => ({
      name: `${variant}-s${seed}`, variant, lr: 1e-3, seed,
      points: curve(8000, 1000, finalVal - 0.1), finalTrain: finalVal - 0.1, finalVal, bestVal: finalVal - 0.05,
      ...(acc === null ? {} : { evalTasks: cloze(acc) }),
    });
    expDir = writeExperiment(path.join(root, 'exp'), 'qk', [
      arm('baseline', 0, 3.3, 0.28), arm('baseline', 1, 3.4, null), arm('baseline', 2, 3.5, null),
      arm('qk-norm', 0, 2.9, 0.30), arm('qk-norm', 1, 3.0, 0.32), arm('qk-norm', 2, 3.1, 0.34),
    ]);
  });

  test('groups differ only by seed; mean ± std with count; differences against the baseline', async () => {
    const result = await compareRuns({ inputs: [expDir], baseline: 'baseline', ...noPlots });
    expect(result.outDir).toBe(path.resolve(expDir, 'compare'));
    expect(result.groups.map((g) => g.label)).toEqual(['baseline', 'qk-norm']);
    const [baseline, qkNorm] = result.groups;
    expect(baseline.runs).toEqual(['baseline-s0', 'baseline-s1', 'baseline-s2']);
    // 3.3, 3.4, 3.5: mean 3.4, sample std sqrt((0.01 + 0 + 0.01) / 2) = 0.1
    expect(baseline.final_val_loss.mean).toBeCloseTo(3.4, 12);
    expect(baseline.final_val_loss.std).toBeCloseTo(0.1, 12);
    expect(baseline.final_val_loss.count).toBe(3);
    expect(baseline.final_train_loss.mean).toBeCloseTo(3.3, 12);
    expect(baseline.best_val_loss.mean).toBeCloseTo(3.35, 12);
    expect(qkNorm.final_val_loss.mean).toBeCloseTo(3.0, 12);
    expect(qkNorm.final_val_loss.std).toBeCloseTo(0.1, 12);
    // eval: 0.30, 0.32, 0.34 → mean 0.32, std 0.02; every run's stderr is 0.02 so their RMS is 0.02
    expect(qkNorm.eval['brown-cloze.acc'].mean).toBeCloseTo(0.32, 12);
    expect(qkNorm.eval['brown-cloze.acc'].std).toBeCloseTo(0.02, 12);
    expect(qkNorm.eval['brown-cloze.acc'].stderr).toBeCloseTo(0.02, 12);
    expect(qkNorm.eval['brown-cloze.acc'].count).toBe(3);
    // only baseline-s0 was evaluated
    expect(baseline.eval['brown-cloze.acc']).toMatchObject({ mean: 0.28, std: null, count: 1 });
    expect(qkNorm.baseline).toBe('baseline');
    expect(qkNorm.deltas!.val_loss).toBeCloseTo(-0.4, 12);
    expect(qkNorm.deltas!['brown-cloze.acc']).toBeCloseTo(0.04, 12);
    expect(baseline.deltas!.val_loss).toBe(0);

    const csv = readCsvRecords(path.join(result.outDir, 'compare.csv'));
    expect(csv.map((r) => r.group)).toEqual(['baseline', 'qk-norm']);
    expect(Number(csv[0].final_val_loss_mean)).toBeCloseTo(3.4, 12);
    expect(Number(csv[0].final_val_loss_std)).toBeCloseTo(0.1, 12);
    expect(csv[0].final_val_loss_n).toBe('3');
    expect(Number(csv[1]['brown-cloze.acc_stderr'])).toBeCloseTo(0.02, 12);
    expect(Number(csv[1].delta_val_loss)).toBeCloseTo(-0.4, 12);

    const md = fs.readFileSync(path.join(result.outDir, 'compare.md'), 'utf8');
    expect(md).toContain('| baseline | 3 | completed×3 | 8k | 3.3000 ± 0.1000 (n=3) | 3.4000 ± 0.1000 (n=3) | 3.3500 ± 0.1000 (n=3) |');
    expect(md).toContain('0.3200 ± 0.0200 (n=3) se 0.0200');
    expect(result.headline).toContain('| qk-norm | 3 | completed×3 | 8k | 2.9000 ± 0.1000 (n=3) | 3.0000 ± 0.1000 (n=3) |');
    expect(result.summary[0]).toBe('qk-norm has the lowest final validation loss (3.0000, n=3); the next, baseline, is 0.4000 higher (3.4000, n=3). '
      + 'The gap is larger than the seed spread (largest std 0.1000).');

    const diff = fs.readFileSync(path.join(result.outDir, 'config-diff.md'), 'utf8');
    expect(diff).toMatch(/\| model\.variant \| "baseline" \| "baseline" \| "baseline" \| "qk-norm" \|/);
    expect(diff).toMatch(/\| seed \| 0 \| 1 \| 2 \| 0 \| 1 \| 2 \|/);
    expect(diff).not.toContain('model.d_model');
    for (const name of ['compare.md', 'compare.csv', 'config-diff.md', 'report.html']) expect(fs.existsSync(path.join(result.outDir, name))).toBe(true);
  });

  test('one seed: the summary says the spread is unknown', async () => {
    const root = tmpDir();
    const a = writeRun(path.join(root, 'a'), { variant: 'baseline', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3.4), finalVal: 3.6 });
    const b = writeRun(path.join(root, 'b'), { variant: 'qk-norm', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3.4), finalVal: 3.45 });
    const c = writeRun(path.join(root, 'c'), { variant: 'qk-norm', lr: 1e-3, seed: 1, points: curve(4000, 1000, 3.4), finalVal: 3.55 });
    const result = await compareRuns({ inputs: [a, b, c], out: path.join(root, 'out'), ...noPlots });
    expect(result.summary[0]).toBe('qk-norm has the lowest final validation loss (3.5000, n=2); the next, baseline, is 0.1000 higher (3.6000, n=1). '
      + 'baseline has one seed, so the seed spread is unknown.');
  });
});

describe('token alignment', () => {
  test('runs with different batch sizes and log steps are compared at equal tokens, not steps', async () => {
    const root = tmpDir();
    const points = (tokens: number[], vals: number[]): MetricPoint[] => tokens.map((t, i) => ({ tokens: t, train: vals[i] + 0.1, val: vals[i] }));
    // A: 1000 tokens per step, validation every 2000 tokens up to 10000.
    const a = writeRun(path.join(root, 'small-batch'), {
      variant: 'qk-norm', lr: 1e-3, seed: 0, batchSize: 4, tokensPerStep: 1000,
      points: points([2000, 4000, 6000, 8000, 10000], [5.0, 4.6, 4.3, 4.1, 4.0]),
    });
    // B: 3000 tokens per step (3× the batch), validation every step up to 12000.
    const b = writeRun(path.join(root, 'big-batch'), {
      variant: 'qk-norm', lr: 1e-3, seed: 0, batchSize: 12, tokensPerStep: 3000,
      points: points([3000, 6000, 9000, 12000], [4.8, 4.2, 3.6, 3.0]),
    });
    // C diverged after 4000 tokens: it must not shrink the common budget.
    const c = writeRun(path.join(root, 'diverged'), {
      variant: 'baseline', lr: 1e-3, seed: 0, status: 'diverged', divergedAtStep: 5, tokensPerStep: 1000,
      points: points([2000, 4000], [5.5, 5.2]), finalVal: null,
    });
    const cwd = process.cwd();
    process.chdir(root);
    let result;
    try {
      result = await compareRuns({ inputs: [a, b, c], ...noPlots });
    } finally {
      process.chdir(cwd);
    }
    // Without an experiment, the output goes to ./compare.
    expect(fs.realpathSync(result.outDir)).toBe(fs.realpathSync(path.join(root, 'compare')));
    // The completed runs last validated at 10000 and 12000 tokens: the common budget is 10000.
    expect(result.matchedTokens).toBe(10000);
    const byId = Object.fromEntries(result.runs.map((r) => [r.id, r]));
    expect(byId['small-batch'].val_loss_matched).toBe(4.0);
    // B at 10000 = 3.6 + (1000 / 3000)(3.0 - 3.6) = 3.4; at step 10 B would be at 30000 tokens, outside its run.
    expect(byId['big-batch'].val_loss_matched).toBeCloseTo(3.4, 12);
    expect(byId.diverged.val_loss_matched).toBeNull();
    // Same variant and lr but different batch size: two arm groups, labelled by the key that differs.
    expect(result.groups.map((g) => g.label)).toEqual(['qk-norm@train.batch_size=4', 'qk-norm@train.batch_size=12', 'baseline']);
    expect(result.headline).toContain('val loss @ 10k tokens');
  });
});

describe('run statuses', () => {
  test('diverged, running and unevaluated runs are shown with their status, never dropped', async () => {
    const root = tmpDir();
    const exp = writeExperiment(path.join(root, 'exp'), 'status', [
      { name: 'baseline-s0', variant: 'baseline', lr: 1e-2, seed: 0, status: 'diverged', divergedAtStep: 7, points: curve(7000, 1000, 4), finalVal: null, bestVal: 5.1,
        headRows: [{ tokens: 7000, layer: 1, head: 3, max_logit: 950 }] },
      { name: 'qk-clip-s0', variant: 'qk-clip', lr: 1e-2, seed: 0, points: curve(10000, 1000, 3).map((p) => ({ ...p, headsClipped: 2 })), finalVal: 3.0, evalTasks: cloze(0.3) },
      { name: 'qk-clip-s1', variant: 'qk-clip', lr: 1e-2, seed: 1, status: 'running', points: curve(4000, 1000, 4).map((p) => ({ ...p, headsClipped: 2 })), finalVal: 4.0 },
      { name: 'qk-norm-s0', variant: 'qk-norm', lr: 1e-2, seed: 0, status: 'interrupted', points: curve(6000, 1000, 3.5), finalVal: 3.6 },
    ]);
    const result = await compareRuns({ inputs: [exp], ...noPlots });
    expect(result.runs.map((r) => [r.id, r.status])).toEqual([
      ['baseline-s0', 'diverged'], ['qk-clip-s0', 'completed'], ['qk-clip-s1', 'running'], ['qk-norm-s0', 'interrupted'],
    ]);
    const [baseline, qkClip, qkNorm] = result.groups;
    // Only the completed seed counts towards qk-clip's final loss; the running one is listed in its statuses.
    expect(qkClip.final_val_loss).toEqual({ mean: 3.0, std: null, count: 1 });
    expect(qkClip.statuses).toEqual({ completed: 1, running: 1 });
    expect(qkClip.partial).toBe(false);
    // 10 logged steps × 2 heads for the completed seed, 4 × 2 for the running one: mean (20 + 8) / 2 = 14
    expect(qkClip.heads_clipped_per_run.mean).toBe(14);
    expect(baseline.partial).toBe(true);
    expect(baseline.final_val_loss.mean).toBeNull();
    expect(baseline.max_logit_peak).toBe(950);
    expect(qkNorm.partial).toBe(true);

    const md = fs.readFileSync(path.join(result.outDir, 'compare.md'), 'utf8');
    expect(md).toContain('| baseline-s0 | baseline | 0 | diverged at step 7 | 7k |');
    expect(md).toContain('| baseline † | 1 | diverged |');
    expect(md).toContain('diverged at step 7');
    expect(md).toContain('| qk-clip-s1 | qk-clip | 1 | running |');
    expect(md).toContain('950.0 (L1 H3 @ 7k)');
    expect(md).toMatch(/\| qk-norm-s0 \| qk-norm \| 0 \| interrupted \|.*\| no eval \|/);
    expect(result.summary).toEqual([
      'Only qk-clip has a completed run with a final validation loss (3.0000, n=1).',
      'Not ranked (no completed run with a validation loss): baseline (diverged); qk-norm (interrupted).',
      'Diverged: baseline-s0 (baseline, at step 7, after 7k tokens).',
      'Still running: qk-clip-s1 (4k tokens).',
      'Interrupted: qk-norm-s0 (6k tokens).',
      'No downstream evaluation: baseline-s0, qk-clip-s1, qk-norm-s0.',
      'Max attention logit peak: baseline 950.0 (baseline-s0, layer 1, head 3, at 7k tokens); qk-clip 28.0 (qk-clip-s0, layer 1, at 10k tokens); qk-norm 28.0 (qk-norm-s0, layer 1, at 6k tokens).',
      'Heads clipped (total over each run): baseline none; qk-clip 28 over 2 runs; qk-norm none.',
    ]);
  });
});

describe('comparability', () => {
  let a: string, b: string, c: string, root: string;
  beforeAll(() => {
    root = tmpDir();
    a = writeRun(path.join(root, 'a'), { variant: 'baseline', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3) });
    b = writeRun(path.join(root, 'b'), { variant: 'qk-norm', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3), tokenizerHash: 'tok-zzzz' });
    c = writeRun(path.join(root, 'c'), { variant: 'qk-norm', lr: 1e-3, seed: 1, points: curve(4000, 1000, 3), valHash: 'val-other' });
  });

  test('different tokenizers are refused with one line naming the runs, unless forced', async () => {
    const err = await rejection(compareRuns({ inputs: [a, b], out: path.join(root, 'out1'), ...noPlots }));
    expect(err.exitCode).toBe(2);
    expect(err.message).toBe('runs differ in tokenizer (manifest.tokenizer_hash): a has tok-aaaa; b has tok-zzzz; their losses are not comparable (pass --force to compare anyway)');
    expect(fs.existsSync(path.join(root, 'out1'))).toBe(false);
    const forced = await compareRuns({ inputs: [a, b], out: path.join(root, 'out2'), force: true, ...noPlots });
    expect(forced.warnings).toEqual(['compared with --force although runs differ in tokenizer (manifest.tokenizer_hash): a has tok-aaaa; b has tok-zzzz']);
    expect(fs.readFileSync(path.join(root, 'out2', 'report.html'), 'utf8')).toContain('compared with --force although runs differ in tokenizer');
  });

  test('different validation data is refused too', async () => {
    const err = await rejection(compareRuns({ inputs: [a, c], out: path.join(root, 'out3'), ...noPlots }));
    expect(err.message).toMatch(/^runs differ in validation data \(manifest\.val_hash\): a has val-bbbb; c has val-other;/);
    expect(err.message).not.toContain('\n');
  });
});

describe('--expect gates', () => {
  let exp: string, root: string;
  beforeAll(() => {
    root = tmpDir();
    exp = writeExperiment(path.join(root, 'exp'), 'gates', [
      { name: 'baseline-s0', variant: 'baseline', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3.3), finalVal: 3.4 },
      { name: 'qk-norm-s0', variant: 'qk-norm', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3.3), finalVal: 3.395, evalTasks: cloze(0.31) },
    ]);
  });

  test('passing gates return their values', async () => {
    const result = await compareRuns({
      inputs: [exp], out: path.join(root, 'pass'), ...noPlots,
      expect: ['qk-norm.val_loss < baseline.val_loss + 0.01', 'qk-norm.brown-cloze.acc >= 0.3'],
    });
    expect(result.gates.map((g) => g.passed)).toEqual([true, true]);
    expect(result.gates[0].left).toBeCloseTo(3.395, 12);
    expect(result.gates[0].right).toBeCloseTo(3.41, 12);
  });

  test('a failing gate exits 1 with a message per failed gate, after the report is written', async () => {
    const out = path.join(root, 'fail');
    const err = await rejection(compareRuns({
      inputs: [exp], out, ...noPlots,
      expect: ['qk-norm.val_loss < baseline.val_loss - 0.01', 'qk-norm.brown-cloze.acc >= 0.3', 'qk-norm.max_logit < 20'],
    }));
    expect(err).toBeInstanceOf(ExpectationError);
    expect(err.exitCode).toBe(1);
    expect(err.message).toBe('2 of 3 expectation(s) failed: qk-norm.val_loss < baseline.val_loss - 0.01: 3.395 < 3.39 is false; qk-norm.max_logit < 20: 28 < 20 is false');
    expect((err as ExpectationError).failures.map((f) => f.expression)).toEqual(['qk-norm.val_loss < baseline.val_loss - 0.01', 'qk-norm.max_logit < 20']);
    const md = fs.readFileSync(path.join(out, 'compare.md'), 'utf8');
    expect(md).toContain('| qk-norm.brown-cloze.acc >= 0.3 | pass |');
    expect(md).toContain('| qk-norm.max_logit < 20 | FAIL | 28 < 20 is false |');
  });

  test('an unknown metric exits 2 naming it, before anything is written', async () => {
    const out = path.join(root, 'unknown');
    const err = await rejection(compareRuns({ inputs: [exp], out, expect: ['qk-norm.val_los < 3'], ...noPlots }));
    expect(err.exitCode).toBe(2);
    expect(err.message).toMatch(/^--expect `qk-norm\.val_los < 3`: unknown metric `val_los` \(metrics: val_loss, /);
    expect(fs.existsSync(out)).toBe(false);
  });

  test('an unknown baseline exits 2 naming it', async () => {
    const err = await rejection(compareRuns({ inputs: [exp], out: path.join(root, 'nb'), baseline: 'qk-clip', ...noPlots }));
    expect(err.exitCode).toBe(2);
    expect(err.message).toBe('--baseline: unknown arm group `qk-clip` (groups: baseline, qk-norm)');
  });
});

describe('bad inputs', () => {
  test('missing and invalid folders are user errors naming the path', async () => {
    const root = tmpDir();
    const missing = path.join(root, 'nope');
    expect((await rejection(compareRuns({ inputs: [missing], out: path.join(root, 'out'), ...noPlots }))).message).toBe(`folder not found: ${missing}`);
    const empty = path.join(root, 'empty');
    fs.mkdirSync(empty);
    expect((await rejection(compareRuns({ inputs: [empty], out: path.join(root, 'out'), ...noPlots }))).message)
      .toBe(`${empty} is neither a run folder (config.resolved.yaml, summary.json) nor an experiment folder (experiment.json), and no run folder was found below it`);

    const broken = writeRun(path.join(root, 'broken'), { variant: 'baseline', lr: 1e-3, seed: 0, points: curve(3000, 1000, 3) });
    const metricsFile = path.join(broken, 'metrics.jsonl');
    const lines = fs.readFileSync(metricsFile, 'utf8').split('\n');
    lines[1] = lines[1].replace('"tokens":2000', '"tokens":"2000"');
    fs.writeFileSync(metricsFile, lines.join('\n'));
    expect((await rejection(compareRuns({ inputs: [broken], out: path.join(root, 'out'), ...noPlots }))).message).toBe(`${metricsFile}:2: key \`tokens\` must be a finite number`);

    const noManifest = writeRun(path.join(root, 'no-manifest'), { variant: 'baseline', lr: 1e-3, seed: 0, points: curve(3000, 1000, 3) });
    fs.rmSync(path.join(noManifest, 'manifest.json'));
    expect((await rejection(compareRuns({ inputs: [noManifest], out: path.join(root, 'out'), ...noPlots }))).message).toBe(`${noManifest} is not a run folder: missing manifest.json`);

    const exp = writeExperiment(path.join(root, 'exp'), 'x', [{ name: 'a', variant: 'baseline', lr: 1e-3, seed: 0, points: curve(3000, 1000, 3) }]);
    const manifest = JSON.parse(fs.readFileSync(path.join(exp, 'experiment.json'), 'utf8'));
    manifest.arms.push({ name: 'b', dir: 'b', variant: 'qk-norm', seed: 0, lr: 1e-3 });
    fs.writeFileSync(path.join(exp, 'experiment.json'), JSON.stringify(manifest));
    // An arm with a resolved config has started, so its folder must be a complete run folder.
    fs.mkdirSync(path.join(exp, 'b'));
    fs.copyFileSync(path.join(exp, 'a', 'config.resolved.yaml'), path.join(exp, 'b', 'config.resolved.yaml'));
    expect((await rejection(compareRuns({ inputs: [exp], out: path.join(root, 'out'), ...noPlots }))).message).toBe(`${path.join(exp, 'b')} is not a run folder: missing manifest.json`);
  });

  test('a partial last line of a running run is skipped; the same in a completed run is an error', async () => {
    const root = tmpDir();
    const running = writeRun(path.join(root, 'running'), { variant: 'baseline', lr: 1e-3, seed: 0, status: 'running', points: curve(3000, 1000, 3) });
    fs.appendFileSync(path.join(running, 'metrics.jsonl'), '{"step": 4, "tok');
    const result = await compareRuns({ inputs: [running], out: path.join(root, 'out'), out: path.join(root, 'out'), ...noPlots });
    expect(result.runs[0].status).toBe('running');
    const done = writeRun(path.join(root, 'done'), { variant: 'baseline', lr: 1e-3, seed: 0, points: curve(3000, 1000, 3) });
    fs.appendFileSync(path.join(done, 'metrics.jsonl'), '{"step": 4, "tok');
    expect((await rejection(compareRuns({ inputs: [done], out: path.join(root, 'out2'), out: path.join(root, 'out'), ...noPlots }))).message)
      .toBe(`${path.join(done, 'metrics.jsonl')}:4: invalid JSON line`);
  });
});

describe('summary.json', () => {
  test('an explicit null final is kept; a missing key is taken from the metrics log', async () => {
    const root = tmpDir();
    const points: MetricPoint[] = [{ tokens: 1000, train: 4.0, val: 4.2 }, { tokens: 2000, train: 3.5, val: 3.9 }, { tokens: 3000, train: 3.6, val: 4.0 }];
    const explicit = writeRun(path.join(root, 'explicit'), { variant: 'baseline', lr: 1e-3, seed: 0, status: 'diverged', points, finalVal: null });
    const missing = writeRun(path.join(root, 'missing'), { variant: 'baseline', lr: 1e-3, seed: 1, status: 'running', points });
    const summaryFile = path.join(missing, 'summary.json');
    const summary = JSON.parse(fs.readFileSync(summaryFile, 'utf8'));
    delete summary.final_train_loss;
    delete summary.final_val_loss;
    delete summary.best_val_loss;
    fs.writeFileSync(summaryFile, JSON.stringify(summary));
    const result = await compareRuns({ inputs: [explicit, missing], out: path.join(root, 'out'), ...noPlots });
    const [a, b] = result.runs;
    expect([a.final_val_loss, a.best_val_loss]).toEqual([null, 3.9]);
    // last logged train and validation losses, and the lowest validation loss
    expect([b.final_train_loss, b.final_val_loss, b.best_val_loss]).toEqual([3.6, 4.0, 3.9]);
  });
});

describe('runs in progress', () => {
  test('a run without summary.json yet is running (lock held) or interrupted, positioned by its last metrics line', async () => {
    const root = tmpDir();
    const points = curve(3000, 1000, 3.5);
    const locked = writeRun(path.join(root, 'locked'), { variant: 'baseline', lr: 1e-3, seed: 0, points });
    fs.rmSync(path.join(locked, 'summary.json'));
    fs.writeFileSync(path.join(locked, 'run.lock'), '12345');
    const orphan = writeRun(path.join(root, 'orphan'), { variant: 'baseline', lr: 1e-3, seed: 1, points });
    fs.rmSync(path.join(orphan, 'summary.json'));
    const result = await compareRuns({ inputs: [locked, orphan], out: path.join(root, 'out'), ...noPlots });
    expect(result.runs.map((r) => [r.id, r.status, r.tokens, r.final_train_loss])).toEqual([
      // curve(3000, 1000, 3.5) ends with train loss 3.5 + 2 * (1 - 1) = 3.5
      ['locked', 'running', 3000, 3.5], ['orphan', 'interrupted', 3000, 3.5],
    ]);
    expect(fs.readFileSync(path.join(root, 'out', 'compare.md'), 'utf8')).toContain('| locked | baseline | 0 | running (no summary.json yet) |');
  });

  test('experiment arms that have not started are reported, not an error, unless none has started', async () => {
    const root = tmpDir();
    const exp = writeExperiment(path.join(root, 'exp'), 'sweep', [
      { name: 'baseline', variant: 'baseline', lr: 1e-3, seed: 0, points: curve(3000, 1000, 3.5) },
      { name: 'qk-norm', variant: 'qk-norm', lr: 1e-3, seed: 0, points: curve(3000, 1000, 3.4) },
    ]);
    fs.rmSync(path.join(exp, 'qk-norm'), { recursive: true });
    const result = await compareRuns({ inputs: [exp], ...noPlots });
    expect(result.runs.map((r) => r.id)).toEqual(['baseline']);
    expect(result.notStarted).toEqual(['sweep/qk-norm']);
    expect(result.summary).toContain('Not started yet: sweep/qk-norm.');
    fs.rmSync(path.join(exp, 'baseline', 'config.resolved.yaml'));
    expect((await rejection(compareRuns({ inputs: [exp], ...noPlots }))).message)
      .toBe(`${exp}: none of the experiment's 2 arms has started (no config.resolved.yaml in their folders)`);
  });

  test('heads clipped come from summary.json when it records the total; empty eval values are skipped', async () => {
    const root = tmpDir();
    const run = writeRun(path.join(root, 'clip'), {
      variant: 'qk-clip', lr: 1e-3, seed: 0, points: curve(3000, 1000, 3.5).map((p) => ({ ...p, headsClipped: 1 })), headsClippedTotal: 17,
      evalTasks: { lambada: { chance: 0, metrics: { acc: { value: null, stderr: null }, perplexity: { value: 40.5, stderr: 2 } } } },
      evalByStep: [{ tokens: 3000, task: 'lambada', metric: 'acc', value: null, stderr: null }, { tokens: 3000, task: 'lambada', metric: 'perplexity', value: 40.5, stderr: 2 }],
    });
    const result = await compareRuns({ inputs: [run], out: path.join(root, 'out'), ...noPlots });
    expect(result.runs[0].heads_clipped).toBe(17);
    expect(Object.keys(result.groups[0].eval)).toEqual(['lambada.perplexity']);
    expect(result.groups[0].eval['lambada.perplexity'].mean).toBe(40.5);
  });
});
