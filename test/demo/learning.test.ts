// The demo's "did evaluation see the training" lines, from an arm's eval/results.json.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { learningLines } from '../../src/demo';

function armWith(byStep: unknown): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-learning-'));
  fs.mkdirSync(path.join(dir, 'eval'));
  fs.writeFileSync(path.join(dir, 'eval', 'results.json'), JSON.stringify({ by_step: byStep }));
  return dir;
}

test('step 0 against the last step, per task, with the difference in standard errors of the difference', () => {
  const acc = (value: number, stderr: number) => ({ acc: { value, stderr }, acc_norm: { value: 0, stderr: 0 } });
  // Out of order on purpose: the lines use the lowest and highest step.
  const dir = armWith([
    { step: 60, tasks: { 'brown-word-order': acc(0.34, 0.04), 'brown-cloze': acc(0.25, 0.03) } },
    { step: 0, tasks: { 'brown-word-order': acc(0.25, 0.03), 'brown-cloze': acc(0.26, 0.04) } },
  ]);
  // (0.34 - 0.25) / hypot(0.03, 0.04) = 0.09 / 0.05 = 1.8; (0.25 - 0.26) / 0.05 = -0.2
  expect(learningLines('qk-norm', dir)).toEqual([
    'qk-norm brown-word-order: acc 0.250 ± 0.030 at step 0 -> 0.340 ± 0.040 at step 60 (+1.8 se)',
    'qk-norm brown-cloze: acc 0.260 ± 0.040 at step 0 -> 0.250 ± 0.030 at step 60 (-0.2 se)',
  ]);
});

test('nothing to say without a step-0 evaluation or without results', () => {
  expect(learningLines('a', armWith([{ step: 60, tasks: {} }]))).toEqual([]);
  expect(learningLines('a', fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-learning-')))).toEqual([]);
});
