// The command is thin: these check its flags, what it prints and its exit codes, not the comparison itself.
import * as fs from 'fs';
import * as path from 'path';
import { Config } from '@oclif/core';
import Compare from '../../src/commands/compare';
import { curve, tmpDir, writeExperiment, writeRun, writeSweep } from './fixtures';

// oclif's Config.load imports an ES module dynamically, which jest's CommonJS sandbox cannot do. The command
// only needs a handful of config members, so the test hands it a stand-in (the end-to-end tests run the real CLI).
const stubConfig = {
  bin: 'mlactl',
  topicSeparator: ':',
  userAgent: 'mlactl-test',
  runHook: async () => ({ successes: [], failures: [] }),
  scopedEnvVar: () => undefined,
  scopedEnvVarKeys: (key: string) => [`MLACTL_${key}`],
} as unknown as Config;

beforeAll(() => {
  jest.spyOn(Config, 'load').mockResolvedValue(stubConfig);
});

afterAll(() => {
  jest.restoreAllMocks();
});

/** Run the command, capturing stdout and stderr; returns the oclif exit code (0 when it returned normally). */
async function runCompare(argv: string[]): Promise<{ stdout: string; stderr: string; exitCode: number; result: unknown }> {
  const out: string[] = [], err: string[] = [];
  // oclif prints through console.log; mlactl's error handler writes to process.stderr directly.
  const stdout = jest.spyOn(console, 'log').mockImplementation((...args: unknown[]) => { out.push(`${args.join(' ')}\n`); });
  const stderr = jest.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => { err.push(String(chunk)); return true; });
  let exitCode = 0;
  let result: unknown;
  try {
    result = await Compare.run(argv);
  } catch (error) {
    const exit = (error as { oclif?: { exit?: number } }).oclif?.exit;
    if (exit === undefined) throw error;
    exitCode = exit;
  } finally {
    stdout.mockRestore();
    stderr.mockRestore();
  }
  return { stdout: out.join(''), stderr: err.join(''), exitCode, result };
}

let exp: string;
let root: string;

beforeAll(() => {
  root = tmpDir();
  exp = writeExperiment(path.join(root, 'exp'), 'cmd', [
    { name: 'baseline-s0', variant: 'baseline', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3.3), finalVal: 3.4 },
    { name: 'qk-norm-s0', variant: 'qk-norm', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3.2), finalVal: 3.3 },
  ]);
});

test('prints the headline table and the report path; --json prints the typed result', async () => {
  const out = path.join(root, 'out-json');
  const { stdout, exitCode } = await runCompare([exp, '--out', out, '--baseline', 'baseline', '--json']);
  expect(exitCode).toBe(0);
  const parsed = JSON.parse(stdout);
  expect(parsed.report).toBe(path.join(out, 'report.html'));
  expect(parsed.groups.map((g: { label: string }) => g.label)).toEqual(['baseline', 'qk-norm']);
  expect(parsed.groups[1].deltas.val_loss).toBeCloseTo(-0.1, 12);
  expect(fs.existsSync(parsed.report)).toBe(true);

  const human = await runCompare([exp, '--out', path.join(root, 'out-text')]);
  expect(human.stdout).toContain('| arm group | runs | status |');
  expect(human.stdout).toContain('| qk-norm | 1 | completed | 4k |');
  expect(human.stdout).toContain(`report: ${path.join(root, 'out-text', 'report.html')}`);
  // One learning rate: no sensitivity table, and --json says so with null.
  expect(human.stdout).not.toContain('| series | lr |');
  expect(parsed.sensitivity).toBeNull();
});

test('a sweep folder prints the learning-rate sensitivity table and the best learning rate; --json carries it', async () => {
  const run = (lr: number, seed: number, finalVal: number | null) => ({
    id: `qk-norm-${lr}-${seed}`, variant: 'qk-norm' as const, lr, seed, points: curve(4000, 1000, 3.2), finalVal,
    ...(finalVal === null ? { status: 'diverged' as const, divergedAtStep: 3 } : {}),
  });
  const sweep = writeSweep(path.join(root, 'sweep'), [run(1e-3, 0, 3.5), run(1e-3, 1, 3.7), run(1e-2, 0, 3.1), run(1e-2, 1, null)]);
  const human = await runCompare([sweep]);
  expect(human.exitCode).toBe(0);
  expect(human.stdout).toContain('| series | lr | runs | status | final val loss (mean ± se) |');
  // 3.5 and 3.7: mean 3.6, standard error 0.1
  expect(human.stdout).toContain('| qk-norm | 1e-3 | 2 | completed×2 | 3.6000 ± 0.1000 (n=2) |');
  expect(human.stdout).toContain('| qk-norm | 0.01 | 2 | completed×1, diverged×1 | 3.1000 (n=1) |');
  expect(human.stdout).toContain('Best learning rate (lowest mean final validation loss among learning rates where no seed diverged): qk-norm 1e-3, 3.6000 ± 0.1000 (n=2).');
  expect(human.stdout).toContain(`report: ${path.join(sweep, 'compare', 'report.html')}`);

  const json = await runCompare([sweep, '--json', '--out', path.join(root, 'sweep-json')]);
  const parsed = JSON.parse(json.stdout);
  expect(parsed.sensitivity.series[0].best_lr).toBe(1e-3);
  expect(parsed.sensitivity.series[0].points[1].diverged.map((d: { run: string }) => d.run)).toEqual(['qk-norm-0.01-1']);
});

test('several inputs and repeated --expect flags; a failed gate exits 1 and still prints the table', async () => {
  const extra = writeRun(path.join(root, 'extra'), { variant: 'qk-clip', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3.25), finalVal: 3.35 });
  const passing = await runCompare([exp, extra, '--out', path.join(root, 'out-pass'),
    '--expect', 'qk-norm.val_loss < baseline.val_loss', '--expect', 'qk-clip.val_loss < baseline.val_loss']);
  expect(passing.exitCode).toBe(0);
  expect(passing.stdout).toContain('| qk-clip | 1 |');

  const failing = await runCompare([exp, '--out', path.join(root, 'out-fail'), '--expect', 'qk-norm.val_loss > baseline.val_loss + 0.01']);
  expect(failing.exitCode).toBe(1);
  expect(failing.stdout).toContain('| baseline | 1 | completed |');
  expect(failing.stderr).toBe('mlactl: 1 of 1 expectation(s) failed: qk-norm.val_loss > baseline.val_loss + 0.01: 3.3 > 3.41 is false\n');
});

test('unknown metric and missing folder exit 2 with one line on stderr', async () => {
  const unknown = await runCompare([exp, '--out', path.join(root, 'out-unknown'), '--expect', 'qk-norm.loss < 3']);
  expect(unknown.exitCode).toBe(2);
  expect(unknown.stderr).toMatch(/^mlactl: --expect `qk-norm\.loss < 3`: unknown metric `loss` \(metrics: [^\n]*\)\n$/);
  const missing = await runCompare([path.join(root, 'nope')]);
  expect(missing.exitCode).toBe(2);
  expect(missing.stderr).toBe(`mlactl: folder not found: ${path.join(root, 'nope')}\n`);
});
