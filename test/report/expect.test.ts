import * as path from 'path';
import { UserError } from '../../src/errors';
import { evaluateGates, parseGate } from '../../src/report/expect';
import { groupRuns, type ArmGroup } from '../../src/report/groups';
import { loadInputs } from '../../src/report/load';
import { curve, tmpDir, writeRun } from './fixtures';

let groups: ArmGroup[];

beforeAll(() => {
  const root = tmpDir();
  const cloze = (acc: number) => ({ 'brown-cloze': { chance: 0.25, metrics: { acc: { value: acc, stderr: 0.02 }, acc_norm: { value: acc + 0.01, stderr: 0.02 } } } });
  const dirs = [
    writeRun(path.join(root, 'b-lr1'), { variant: 'baseline', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3.5), finalVal: 3.5, evalTasks: cloze(0.30) }),
    writeRun(path.join(root, 'b-lr2'), { variant: 'baseline', lr: 1.5e-3, seed: 0, points: curve(4000, 1000, 3.6), finalVal: 3.6 }),
    writeRun(path.join(root, 'n-lr1'), { variant: 'qk-norm', lr: 1e-3, seed: 0, points: curve(4000, 1000, 3.2), finalVal: 3.2, evalTasks: cloze(0.34) }),
  ];
  groups = groupRuns(loadInputs(dirs).runs, null);
});

function thrown(fn: () => unknown): UserError {
  try {
    fn();
  } catch (err) {
    if (err instanceof UserError) return err;
    throw err;
  }
  throw new Error('expected a UserError');
}

describe('--expect language', () => {
  test('labels: variant alone when unique, variant@lr when a variant has several learning rates', () => {
    expect(groups.map((g) => g.label)).toEqual(['baseline@lr=1e-3', 'baseline@lr=1.5e-3', 'qk-norm']);
  });

  test('precedence: * and / bind tighter than + and -, parentheses override, unary minus', () => {
    const [result] = evaluateGates(['qk-norm.val_loss == 1 + 2 * 3 - (4 - 2) / 2 - -0.2 - 3.8'], groups);
    // 1 + 6 - 1 + 0.2 - 3.8 = 2.4 ≠ 3.2
    expect(result.right).toBeCloseTo(2.4, 12);
    expect(result.passed).toBe(false);
  });

  test('group labels with @, = and dots, and hyphenated task names, parse as references', () => {
    const gate = parseGate('baseline@lr=1.5e-3.val_loss-0.1 >= qk-norm.brown-cloze.acc_norm', groups.map((g) => g.label));
    expect(gate.left).toEqual({
      kind: 'binary', op: '-',
      left: { kind: 'ref', group: 'baseline@lr=1.5e-3', metric: 'val_loss', text: 'baseline@lr=1.5e-3.val_loss' },
      right: { kind: 'number', value: 0.1 },
    });
    expect(gate.right).toEqual({ kind: 'ref', group: 'qk-norm', metric: 'brown-cloze.acc_norm', text: 'qk-norm.brown-cloze.acc_norm' });
    expect(gate.op).toBe('>=');
  });

  test('pass and fail with margins and eval metrics', () => {
    const results = evaluateGates([
      'qk-norm.val_loss < baseline@lr=1e-3.val_loss - 0.25', // 3.2 < 3.25: pass
      'qk-norm.val_loss < baseline@lr=1e-3.val_loss - 0.35', // 3.2 < 3.15: fail
      'qk-norm.brown-cloze.acc >= 0.3', // 0.34: pass
      'qk-norm.brown-cloze.acc - baseline@lr=1e-3.brown-cloze.acc > 0.05', // 0.04: fail
      'qk-norm.val_loss <= qk-norm.val_loss',
      'qk-norm.max_logit < 100', // curve() peaks at 28
      'qk-norm.heads_clipped == 0',
    ], groups);
    expect(results.map((r) => r.passed)).toEqual([true, false, true, false, true, true, true]);
    expect(results[1].left).toBeCloseTo(3.2, 12);
    expect(results[1].right).toBeCloseTo(3.15, 12);
    expect(results[1].message).toBe('qk-norm.val_loss < baseline@lr=1e-3.val_loss - 0.35: 3.2 < 3.15 is false');
    expect(results[5].left).toBe(28);
  });

  test('a known metric that a group lacks fails the gate instead of erroring', () => {
    const [result] = evaluateGates(['baseline@lr=1.5e-3.brown-cloze.acc > 0'], groups);
    expect(result.passed).toBe(false);
    expect(result.message).toContain('no value for baseline@lr=1.5e-3.brown-cloze.acc');
  });

  test('unknown group, unknown metric, ambiguous variant and bad syntax are input errors (exit 2) naming the culprit', () => {
    const unknownMetric = thrown(() => evaluateGates(['qk-norm.perplexity < 3'], groups));
    expect(unknownMetric.exitCode).toBe(2);
    expect(unknownMetric.message).toContain('unknown metric `perplexity`');
    const unknownTask = thrown(() => evaluateGates(['qk-norm.hellaswag.acc > 0.3'], groups));
    expect(unknownTask.message).toContain('unknown metric `hellaswag.acc`');
    const unknownGroup = thrown(() => evaluateGates(['qk-clip.val_loss < 3'], groups));
    expect(unknownGroup.exitCode).toBe(2);
    expect(unknownGroup.message).toContain('unknown arm group `qk-clip`');
    const ambiguous = thrown(() => evaluateGates(['baseline.val_loss < 3'], groups));
    expect(ambiguous.message).toContain('matches several arm groups (baseline@lr=1e-3, baseline@lr=1.5e-3)');
    const noOp = thrown(() => evaluateGates(['qk-norm.val_loss 3'], groups));
    expect(noOp.exitCode).toBe(2);
    expect(noOp.message).toBe('--expect `qk-norm.val_loss 3`: expected an operator (< <= > >= == + - * /) before `3` at column 18');
    const noComparison = thrown(() => evaluateGates(['qk-norm.val_loss + 3'], groups));
    expect(noComparison.message).toMatch(/expected one of < <= > >= == at column 21/);
    const trailing = thrown(() => evaluateGates(['qk-norm.val_loss < 3 )'], groups));
    expect(trailing.message).toMatch(/column 22/);
    const bare = thrown(() => evaluateGates(['qk-norm < 3'], groups));
    expect(bare.message).toContain('expected `group.metric` but found `qk-norm`');
  });
});
