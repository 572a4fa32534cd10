import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { UserError } from '../../src/errors';
import { evaluateTasks, type EvalProgress, type EvalResults } from '../../src/eval/runner';
import { appendByStep, writeEvalResults } from '../../src/eval/results';
import { loadTask, taskDefinition, type EvalTask } from '../../src/eval/tasks';
import type { TaskItem } from '../../src/eval/types';
import { bigramModel, characterPieces, constantModel, pieceTokenizer, unigramModel } from './helpers';

const ln = Math.log;

function task(like: string, name: string, items: TaskItem[]): EvalTask {
  return { definition: { ...taskDefinition(like), name }, items, source: 'test' };
}

// A unigram model: the context is ignored, so each choice's score is a sum of the pieces' log-probabilities.
// acc_norm and acc_bytes divide by the length of the choice alone, without the delimiter's space.
const P = { ' ': 0.2, a: 0.35, b: 0.1, c: 0.05, 'é': 0.25, Q: 0.025, ':': 0.025 };
const mcTokenizer = pieceTokenizer(characterPieces('Q: abcé'));
const mcTask = task('arc-easy', 'toy-mc', [
  // " ab" -4.96 (per char -2.48), " aaaa" -5.81 (-1.45), " c" -4.61 (-4.61): acc picks 2, acc_norm 1.
  { kind: 'multiple_choice', context: 'Q:', choices: ['ab', 'aaaa', 'c'], gold: 1 },
  // " é" -3.00 (per char -3.00, per byte -1.50), " aa" -3.71 (-1.85, -1.85): acc 0, acc_norm 1, acc_bytes 0.
  { kind: 'multiple_choice', context: 'Q:', choices: ['é', 'aa'], gold: 0 },
  { kind: 'multiple_choice', context: 'Q:', choices: ['b', 'a'], gold: 1 },
]);

// p(next | prev) over " abcx": after "a" a space is likely (0.6), after "b" it is not (0.2).
const partialTokenizer = pieceTokenizer(characterPieces('xab c'));
const partialProb = (prev: string, next: string): number => {
  if (prev === 'a') return next === ' ' ? 0.6 : 0.1;
  if (prev === 'b') return next === ' ' ? 0.2 : next === 'c' ? 0.5 : 0.1;
  return 0.2;
};
const partialTask = task('winogrande', 'toy-partial', [
  { kind: 'partial', contexts: ['xa', 'xb'], continuation: 'c', gold: 0 },
  { kind: 'partial', contexts: ['xb', 'xa'], continuation: 'c', gold: 0 },
]);

// After a space "a" is the argmax (0.5); after anything else the space is (0.5).
const targetTokenizer = pieceTokenizer(characterPieces(' abct'));
const targetProb = (prev: string, next: string): number => {
  if (prev === ' ') return ({ a: 0.5, b: 0.2 } as Record<string, number>)[next] ?? 0.1;
  return ({ ' ': 0.5, a: 0.2 } as Record<string, number>)[next] ?? 0.1;
};
const targetTask = task('lambada', 'toy-lambada', [
  { kind: 'target', context: 'ab', target: ' a' },
  { kind: 'target', context: 'ab a', target: ' tt' },
]);

describe('evaluateTasks', () => {
  it('computes acc, acc_norm and acc_bytes with stderr and chance (values by hand)', async () => {
    const progress: EvalProgress[] = [];
    const { tasks } = await evaluateTasks(unigramModel(mcTokenizer, P), [mcTask], { batchSize: 2, onProgress: (p) => progress.push(p) });
    const [result] = tasks;
    const expectedLogprobs = [
      [ln(0.2) + ln(0.35) + ln(0.1), ln(0.2) + 4 * ln(0.35), ln(0.2) + ln(0.05)],
      [ln(0.2) + ln(0.25), ln(0.2) + 2 * ln(0.35)],
      [ln(0.2) + ln(0.1), ln(0.2) + ln(0.35)],
    ];
    result.items.forEach((item, i) => {
      expect(item).toMatchObject({ index: i, context: 'Q:', gold: [1, 0, 1][i] });
      (item as { logprobs: number[] }).logprobs.forEach((lp, j) => expect(lp).toBeCloseTo(expectedLogprobs[i][j], 12));
    });
    expect(result.items.map((it) => [(it as { pred: number }).pred, (it as { pred_norm: number }).pred_norm, (it as { pred_bytes: number }).pred_bytes])).toEqual([
      [2, 1, 1],
      [0, 1, 0],
      [1, 1, 1],
    ]);
    // acc per item 0,1,1 and acc_norm 1,0,1: mean 2/3, sample variance 1/3, stderr sqrt(1/3)/sqrt(3) = 1/3.
    expect(result.metrics.acc!.value).toBeCloseTo(2 / 3, 14);
    expect(result.metrics.acc!.stderr).toBeCloseTo(1 / 3, 14);
    expect(result.metrics.acc_norm!.value).toBeCloseTo(2 / 3, 14);
    expect(result.metrics.acc_norm!.stderr).toBeCloseTo(1 / 3, 14);
    expect(result.metrics.acc_bytes).toMatchObject({ value: 1, stderr: 0, higherIsBetter: true, aggregation: 'mean' });
    expect(result.chance).toBeCloseTo((1 / 3 + 1 / 2 + 1 / 2) / 3, 14);
    expect(result).toMatchObject({ name: 'toy-mc', version: 1, n: 3 });
    expect(progress[progress.length - 1]).toEqual({ task: 'toy-mc', done: 7, total: 7 });
  });

  it('partial scoring picks the context under which the shared continuation is likelier', async () => {
    const { tasks } = await evaluateTasks(bigramModel(partialTokenizer, partialProb), [partialTask]);
    const [result] = tasks;
    const afterA = ln(0.6) + ln(0.2); // " " after "a", then "c" after " "
    const afterB = ln(0.2) + ln(0.2);
    expect((result.items[0] as { logprobs: number[] }).logprobs[0]).toBeCloseTo(afterA, 12);
    expect((result.items[0] as { logprobs: number[] }).logprobs[1]).toBeCloseTo(afterB, 12);
    expect(result.items.map((it) => (it as { pred: number }).pred)).toEqual([0, 1]);
    expect(result.metrics.acc).toMatchObject({ value: 0.5, stderr: 0.5 });
    expect(Object.keys(result.metrics)).toEqual(['acc']);
    expect(result.chance).toBe(0.5);
  });

  it('LAMBADA: accuracy by greedy match of every target token, perplexity of the target', async () => {
    const { tasks } = await evaluateTasks(bigramModel(targetTokenizer, targetProb), [targetTask]);
    const [result] = tasks;
    const first = 2 * ln(0.5); // " " after "b", "a" after " ": both argmax
    const second = ln(0.5) + 2 * ln(0.1); // " " greedy, "t" after " " and "t" after "t" are not
    expect(result.items[0]).toMatchObject({ greedy: true, n_tokens: 2, target: ' a' });
    expect(result.items[1]).toMatchObject({ greedy: false, n_tokens: 3 });
    expect((result.items[0] as { logprob: number }).logprob).toBeCloseTo(first, 12);
    expect((result.items[1] as { logprob: number }).logprob).toBeCloseTo(second, 12);
    expect(result.metrics.acc).toMatchObject({ value: 0.5, stderr: 0.5 });
    const ppl = Math.exp(-(first + second) / 2);
    expect(result.metrics.perplexity!.value).toBeCloseTo(ppl, 10);
    expect(result.metrics.perplexity!.stderr).toBeCloseTo((ppl * Math.abs(first - second)) / 2, 10);
    expect(result.metrics.perplexity!.higherIsBetter).toBe(false);
    expect(result.chance).toBeNull();
  });

  it('normalises acc_norm and acc_bytes by the choice alone, without the delimiter (lm-evaluation-harness)', async () => {
    // Unigram log-probabilities: " " -3, "a" -1, "b" -2, "é" -3 (2 UTF-8 bytes), "Q" and ":" -1.
    const logP = { ' ': -3, a: -1, b: -2, 'é': -3, Q: -1, ':': -1 };
    const p = Object.fromEntries(Object.entries(logP).map(([piece, lp]) => [piece, Math.exp(lp)]));
    const model = unigramModel(pieceTokenizer(characterPieces('Q: abé')), p);
    // HellaSwag-like: " a" sums to -4 and " bbb" to -9. Per character of the choice, -4/1 < -9/3, so acc_norm picks
    // "bbb"; dividing by the delimiter too (-4/2 > -9/4) would pick "a". ASCII, so acc_bytes flips the same way.
    const hellaswag = task('hellaswag', 'toy-hellaswag', [{ kind: 'multiple_choice', context: 'Q:', choices: ['a', 'bbb'], gold: 1 }]);
    // ARC-like: " é" sums to -6 over 2 bytes, " bbbb" to -11 over 4 bytes: -6/2 < -11/4, so acc_bytes picks "bbbb";
    // with the delimiter's byte (-6/3 > -11/5) it would pick "é".
    const arc = task('arc-easy', 'toy-arc', [{ kind: 'multiple_choice', context: 'Q:', choices: ['é', 'bbbb'], gold: 1 }]);
    const { tasks } = await evaluateTasks(model, [hellaswag, arc]);
    expect((tasks[0].items[0] as { logprobs: number[] }).logprobs.map((lp) => Math.round(lp * 1e9) / 1e9)).toEqual([-4, -9]);
    expect((tasks[1].items[0] as { logprobs: number[] }).logprobs.map((lp) => Math.round(lp * 1e9) / 1e9)).toEqual([-6, -11]);
    expect(tasks.map((t) => t.items[0])).toMatchObject([
      { pred: 0, pred_norm: 1, pred_bytes: 1 },
      { pred: 0, pred_norm: 1, pred_bytes: 1 },
    ]);
    expect(tasks.map((t) => [t.metrics.acc!.value, t.metrics.acc_norm!.value, t.metrics.acc_bytes!.value])).toEqual([[0, 1, 1], [0, 1, 1]]);
  });

  it('fails the task when the model gives NaN instead of scoring every item as choice 0', async () => {
    const corrupt = constantModel(mcTokenizer, NaN, '/runs/a/ckpt/step-10');
    const failure = evaluateTasks(corrupt, [mcTask]);
    await expect(failure).rejects.toThrow(UserError);
    await expect(failure).rejects.toThrow(/^toy-mc item \d+ choice \d+: \/runs\/a\/ckpt\/step-10 gives log-probability NaN;/);
  });

  it('honours limit', async () => {
    const { tasks } = await evaluateTasks(unigramModel(mcTokenizer, P), [mcTask], { limit: 2 });
    expect(tasks[0].n).toBe(2);
    expect(tasks[0].metrics.acc!.value).toBe(0.5);
  });
});

describe('result files', () => {
  let runDir: string;
  let mcResults: EvalResults;
  let lambadaResults: EvalResults;
  beforeAll(async () => {
    mcResults = await evaluateTasks(unigramModel(mcTokenizer, P), [mcTask]);
    lambadaResults = await evaluateTasks(bigramModel(targetTokenizer, targetProb), [targetTask]);
  });
  beforeEach(() => {
    runDir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-eval-'));
  });
  afterEach(() => fs.rmSync(runDir, { recursive: true, force: true }));

  const evalFiles = () => fs.readdirSync(path.join(runDir, 'eval')).sort();
  const csvRows = (file: string) => fs.readFileSync(path.join(runDir, 'eval', file), 'utf8').trim().split('\n').map((l) => l.split(','));

  it('writes results.json, results.csv and one jsonl per task', () => {
    const summary = writeEvalResults(runDir, { tasks: [...mcResults.tasks, ...lambadaResults.tasks] }, { checkpointStep: 100, tokens: 819200 });
    expect(evalFiles()).toEqual(['results.csv', 'results.json', 'toy-lambada.jsonl', 'toy-mc.jsonl']);
    const json = JSON.parse(fs.readFileSync(path.join(runDir, 'eval', 'results.json'), 'utf8'));
    expect(json.tasks['toy-mc']).toMatchObject({ version: 1, n: 3, checkpoint_step: 100, tokens: 819200 });
    expect(json.tasks['toy-mc'].chance).toBeCloseTo(4 / 9, 14);
    expect(json.tasks['toy-mc'].metrics.acc_bytes).toEqual({ value: 1, stderr: 0, higher_is_better: true, aggregation: 'mean' });
    expect(json.tasks['toy-lambada'].chance).toBeNull();
    expect(summary.tasks.map((t) => t.name)).toEqual(['toy-mc', 'toy-lambada']);

    const rows = csvRows('results.csv');
    expect(rows[0]).toEqual(['task', 'metric', 'value', 'stderr', 'n', 'chance', 'version', 'step', 'tokens']);
    expect(rows.slice(1).map((r) => `${r[0]}/${r[1]}`)).toEqual(['toy-lambada/acc', 'toy-lambada/perplexity', 'toy-mc/acc', 'toy-mc/acc_norm', 'toy-mc/acc_bytes']);
    const accRow = rows.find((r) => r[0] === 'toy-mc' && r[1] === 'acc')!;
    expect(Number(accRow[2])).toBeCloseTo(2 / 3, 14);
    expect(Number(accRow[3])).toBeCloseTo(1 / 3, 14);
    expect(accRow.slice(4)).toEqual(['3', String(4 / 9), '1', '100', '819200']);
    expect(rows.find((r) => r[0] === 'toy-lambada')![5]).toBe('');

    const lines = fs.readFileSync(path.join(runDir, 'eval', 'toy-mc.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.map((l) => [l.index, l.gold, l.pred, l.pred_norm])).toEqual([[0, 1, 2, 1], [1, 0, 0, 1], [2, 1, 1, 1]]);
    expect(lines[1].choices).toEqual(['é', 'aa']);
  });

  it('keeps other tasks in results.json when a later evaluation covers fewer', () => {
    writeEvalResults(runDir, mcResults, { checkpointStep: 100, tokens: 1000 });
    writeEvalResults(runDir, lambadaResults, { checkpointStep: 200, tokens: 2000 });
    const json = JSON.parse(fs.readFileSync(path.join(runDir, 'eval', 'results.json'), 'utf8'));
    expect(json.tasks['toy-mc'].checkpoint_step).toBe(100);
    expect(json.tasks['toy-lambada'].checkpoint_step).toBe(200);
  });

  it('by-step.csv accumulates checkpoints and replaces a re-evaluated one', () => {
    appendByStep(runDir, writeEvalResults(runDir, mcResults, { checkpointStep: 200, tokens: 2000 }));
    appendByStep(runDir, writeEvalResults(runDir, mcResults, { checkpointStep: 100, tokens: 1000 }));
    appendByStep(runDir, writeEvalResults(runDir, lambadaResults, { checkpointStep: 100, tokens: 1000 }));
    let rows = csvRows('by-step.csv');
    expect(rows[0]).toEqual(['step', 'tokens', 'task', 'metric', 'value', 'stderr']);
    expect(rows.slice(1).map((r) => r.slice(0, 4).join(' '))).toEqual([
      '100 1000 toy-mc acc', '100 1000 toy-mc acc_norm', '100 1000 toy-mc acc_bytes', '100 1000 toy-lambada acc', '100 1000 toy-lambada perplexity',
      '200 2000 toy-mc acc', '200 2000 toy-mc acc_norm', '200 2000 toy-mc acc_bytes',
    ]);
    // Re-evaluating step 200 with fewer items replaces its rows instead of adding more.
    const limited = { tasks: [{ ...mcResults.tasks[0], metrics: { acc: { ...mcResults.tasks[0].metrics.acc!, value: 0.25 } } }] };
    appendByStep(runDir, writeEvalResults(runDir, limited, { checkpointStep: 200, tokens: 2000 }));
    rows = csvRows('by-step.csv');
    expect(rows.filter((r) => r[0] === '200').map((r) => `${r[3]}=${r[4]}`)).toEqual(['acc_norm=' + String(2 / 3), 'acc_bytes=1', 'acc=0.25']);
    expect(evalFiles().filter((f) => f.endsWith('.tmp'))).toEqual([]);
  });

  it('a malformed task fails at load time, before anything is scored or written', async () => {
    writeEvalResults(runDir, mcResults, { checkpointStep: 100, tokens: 1000 });
    const before = evalFiles().map((f) => [f, fs.readFileSync(path.join(runDir, 'eval', f), 'utf8')]);
    const model = unigramModel(mcTokenizer, P);
    const evaluate = async () => {
      const tasks = [`hellaswag=${path.join(__dirname, 'fixtures', 'label-out-of-range.jsonl')}`].map((spec) => loadTask(spec));
      writeEvalResults(runDir, await evaluateTasks(model, tasks), { checkpointStep: 200, tokens: 2000 });
    };
    await expect(evaluate()).rejects.toThrow(/label-out-of-range\.jsonl:2: field "label" = 4/);
    expect(model.batches).toHaveLength(0);
    expect(evalFiles().map((f) => [f, fs.readFileSync(path.join(runDir, 'eval', f), 'utf8')])).toEqual(before);
  });

  it('an item the model cannot score stops the evaluation before anything is written', async () => {
    const tooLong = task('arc-easy', 'toy-long', [{ kind: 'multiple_choice', context: 'Q:', choices: ['aaaaaaaaaa', 'b'], gold: 0 }]);
    await expect(evaluateTasks(unigramModel(mcTokenizer, P, 8), [mcTask, tooLong])).rejects.toThrow(UserError);
    await expect(evaluateTasks(unigramModel(mcTokenizer, P, 8), [tooLong])).rejects.toThrow(/^toy-long item 0 choice 0: continuation of 11 tokens/);
    expect(fs.existsSync(path.join(runDir, 'eval'))).toBe(false);
  });

  it('a failed write leaves results.json as it was and no temporary files', () => {
    writeEvalResults(runDir, lambadaResults, { checkpointStep: 100, tokens: 1000 });
    // A directory where toy-mc.jsonl should go makes its rename fail.
    fs.mkdirSync(path.join(runDir, 'eval', 'toy-mc.jsonl'));
    const resultsBefore = fs.readFileSync(path.join(runDir, 'eval', 'results.json'), 'utf8');
    expect(() => writeEvalResults(runDir, mcResults, { checkpointStep: 200, tokens: 2000 })).toThrow();
    expect(evalFiles()).toEqual(['results.csv', 'results.json', 'toy-lambada.jsonl', 'toy-mc.jsonl']);
    expect(fs.readFileSync(path.join(runDir, 'eval', 'results.json'), 'utf8')).toBe(resultsBefore);
  });
});
