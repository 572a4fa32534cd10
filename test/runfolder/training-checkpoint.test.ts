// Training checkpoints: state.json and optimizer.safetensors are validated key by key before anything is restored.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { initBackend } from '../../src/backend';
import { loadConfig } from '../../src/config/load';
import type { Config } from '../../src/config/types';
import { memoryTokenStore } from '../../src/data/batches';
import { UserError } from '../../src/errors';
import { loadSafetensors, saveSafetensors } from '../../src/runfolder/safetensors';
import { modelSpec, type ModelSpec } from '../../src/model/spec';
import { restoreTrainingCheckpoint, saveTrainingCheckpoint } from '../../src/engine/tfjs/checkpoint';
import type { TrainState } from '../../src/runfolder/training-checkpoint';
import { readMetrics } from '../../src/runfolder/metrics';
import { trainRun } from '../../src/train/run';
import { Trainer } from '../../src/engine/tfjs/trainer';
import { randomTokens } from '../helpers';

const ROOT = path.resolve(__dirname, '../..');
const TINY = path.join(ROOT, 'configs/models/tiny.yaml');
const tmp = (): string => fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-state-'));

let cfg: Config;
let spec: ModelSpec;
let saved: string;
let savedState: TrainState;
let fresh: Trainer;
let freshValues: Float32Array;

const newTrainer = (c: Config = cfg) => new Trainer(c, spec, memoryTokenStore(randomTokens(4000, 258, 3)));

beforeAll(async () => {
  await initBackend('cpu');
  cfg = loadConfig(TINY, ['backend=cpu']);
  spec = modelSpec(cfg.model, 320);
  const trainer = newTrainer();
  await trainer.runStep();
  savedState = {
    step: 1,
    tokens: 128,
    data_cursor: { seed: cfg.data.seed, step: 1 },
    schedule: { step: 1, total_steps: 32, warmup_steps: 4 },
    elapsed_s: 0.5,
    best_val_loss: null,
    last_val_loss: null,
    heads_clipped_total: 0,
    max_logit_peak: 1.25,
  };
  saved = await saveTrainingCheckpoint(tmp(), trainer, savedState, null);
  trainer.dispose();
  fresh = newTrainer();
  freshValues = fresh.params['model.embed_tokens.weight'].dataSync() as Float32Array;
});

afterAll(() => fresh.dispose());

/** A copy of the saved checkpoint (folder step-1) with one edit. */
function copy(edit: (dir: string) => void): string {
  const dir = path.join(tmp(), 'step-1');
  fs.cpSync(saved, dir, { recursive: true });
  edit(dir);
  return dir;
}

function editState(edit: (s: any) => unknown): string {
  return copy((dir) => {
    const file = path.join(dir, 'state.json');
    const s = JSON.parse(fs.readFileSync(file, 'utf8'));
    const out = edit(s) ?? s;
    fs.writeFileSync(file, typeof out === 'string' ? out : JSON.stringify(out));
  });
}

function editOptimizer(edit: (t: ReturnType<typeof loadSafetensors>['tensors'], meta: Record<string, string>) => void): string {
  return copy((dir) => {
    const file = path.join(dir, 'optimizer.safetensors');
    const { tensors, metadata } = loadSafetensors(file);
    edit(tensors, metadata);
    saveSafetensors(file, tensors, metadata);
  });
}

function refusal(dir: string, trainer = fresh): string {
  try {
    restoreTrainingCheckpoint(dir, trainer);
  } catch (e) {
    expect(e).toBeInstanceOf(UserError);
    expect((e as Error).message).not.toContain('\n');
    // Nothing was assigned: validation comes before the first write into the trainer.
    expect(trainer.params['model.embed_tokens.weight'].dataSync()).toEqual(freshValues);
    expect(trainer.optimizer.steps).toBe(0);
    return (e as Error).message;
  }
  throw new Error(`${dir} was accepted`);
}

test('an untouched checkpoint restores the state and the parameters', () => {
  const t = newTrainer();
  expect(restoreTrainingCheckpoint(saved, t)).toEqual(savedState);
  expect(t.optimizer.steps).toBe(1);
  t.dispose();
});

describe('state.json', () => {
  const KEYS = ['step', 'tokens', 'data_cursor', 'schedule', 'elapsed_s', 'best_val_loss', 'last_val_loss', 'heads_clipped_total', 'max_logit_peak'];
  test.each(KEYS)('without %s: refused naming the file and the key', (key) => {
    const dir = editState((s) => void delete s[key]);
    expect(refusal(dir)).toBe(`${path.join(dir, 'state.json')}: ${key}: missing`);
  });

  test.each([
    ['data_cursor', 'seed'],
    ['data_cursor', 'step'],
    ['schedule', 'step'],
    ['schedule', 'total_steps'],
    ['schedule', 'warmup_steps'],
  ])('without %s.%s: refused', (outer, inner) => {
    const dir = editState((s) => void delete s[outer][inner]);
    expect(refusal(dir)).toBe(`${path.join(dir, 'state.json')}: ${outer}.${inner}: missing`);
  });

  const BAD: [string, (s: any) => void, string, RegExp][] = [
    ['a negative step', (s) => (s.step = -1), 'step', /non-negative integer/],
    ['a fractional step', (s) => (s.step = 1.5), 'step', /non-negative integer/],
    ['a string step', (s) => (s.step = '1'), 'step', /non-negative integer/],
    ['negative tokens', (s) => (s.tokens = -128), 'tokens', /non-negative integer/],
    ['a string elapsed time', (s) => (s.elapsed_s = '3'), 'elapsed_s', /non-negative number/],
    ['a negative elapsed time', (s) => (s.elapsed_s = -3), 'elapsed_s', /non-negative number/],
    ['a string loss', (s) => (s.best_val_loss = 'low'), 'best_val_loss', /number or null/],
    ['an object loss', (s) => (s.last_val_loss = {}), 'last_val_loss', /number or null/],
    ['fractional clipped heads', (s) => (s.heads_clipped_total = 0.5), 'heads_clipped_total', /non-negative integer/],
    ['a string peak', (s) => (s.max_logit_peak = 'big'), 'max_logit_peak', /number or null/],
    ['a null cursor', (s) => (s.data_cursor = null), 'data_cursor', /object/],
    ['a negative seed', (s) => (s.data_cursor.seed = -1), 'data_cursor.seed', /non-negative integer/],
    ['a cursor at another step', (s) => (s.data_cursor.step = 2), 'data_cursor.step', /2, but step is 1/],
    ['a schedule at another step', (s) => (s.schedule.step = 0), 'schedule.step', /0, but step is 1/],
    ['a string total', (s) => (s.schedule.total_steps = '32'), 'schedule.total_steps', /non-negative integer/],
    ['a step other than the folder', (s) => Object.assign(s, { step: 2, data_cursor: { ...s.data_cursor, step: 2 }, schedule: { ...s.schedule, step: 2 } }), 'step', /2.*step-1/],
  ];
  test.each(BAD)('%s: refused naming the file and the key', (_case, edit, key, what) => {
    const dir = editState((s) => void edit(s));
    const msg = refusal(dir);
    expect(msg.startsWith(`${path.join(dir, 'state.json')}: ${key}: `)).toBe(true);
    expect(msg).toMatch(what);
  });

  test.each([
    ['not JSON', '{"step": '],
    ['an array', '[1]'],
  ])('a state.json that is %s: refused naming the file', (_case, text) => {
    const dir = editState(() => text);
    expect(refusal(dir).startsWith(`${path.join(dir, 'state.json')}: `)).toBe(true);
  });

  test('no state.json: refused naming the file', () => {
    const dir = copy((d) => fs.rmSync(path.join(d, 'state.json')));
    expect(refusal(dir)).toBe(`${path.join(dir, 'state.json')}: file not found`);
  });
});

describe('optimizer.safetensors holds exactly the keys of the format', () => {
  const opt = (dir: string) => path.join(dir, 'optimizer.safetensors');

  test('a missing moment is refused naming it', () => {
    const dir = editOptimizer((t) => void delete t['model.norm.weight.exp_avg_sq']);
    expect(refusal(dir)).toBe(`${opt(dir)}: model.norm.weight.exp_avg_sq: missing`);
  });

  test('a missing step is refused', () => {
    const dir = editOptimizer((t) => void delete t.step);
    expect(refusal(dir)).toBe(`${opt(dir)}: step: missing`);
  });

  test('an extra key is refused naming it', () => {
    const dir = editOptimizer((t) => (t['model.norm.weight.momentum_buffer'] = { shape: [32], data: new Float32Array(32) }));
    expect(refusal(dir)).toMatch(new RegExp(`^${opt(dir)}: model\\.norm\\.weight\\.momentum_buffer: unexpected tensor`));
  });

  test('a moment of another shape is refused', () => {
    const dir = editOptimizer((t) => (t['model.norm.weight.exp_avg'] = { shape: [2, 16], data: new Float32Array(32) }));
    expect(refusal(dir)).toBe(`${opt(dir)}: model.norm.weight.exp_avg: shape [2,16], expected [32]`);
  });

  test('a moment of another dtype is refused', () => {
    const dir = editOptimizer((t) => (t['model.norm.weight.exp_avg'] = { shape: [32], data: new Int32Array(32) }));
    expect(refusal(dir)).toBe(`${opt(dir)}: model.norm.weight.exp_avg: dtype I32, expected F32`);
  });

  test('a float step is refused', () => {
    const dir = editOptimizer((t) => (t.step = { shape: [], data: Float32Array.of(1) }));
    expect(refusal(dir)).toBe(`${opt(dir)}: step: dtype F32, expected I32`);
  });

  test('a step that is not a scalar is refused', () => {
    const dir = editOptimizer((t) => (t.step = { shape: [1], data: Int32Array.of(1) }));
    expect(refusal(dir)).toBe(`${opt(dir)}: step: shape [1], expected []`);
  });

  test('an optimizer step other than state.json step is refused', () => {
    const dir = editOptimizer((t) => (t.step = { shape: [], data: Int32Array.of(5) }));
    expect(refusal(dir)).toMatch(new RegExp(`^${opt(dir)}: step: 5, but state\\.json step is 1$`));
  });

  test('another optimizer in the metadata is refused', () => {
    const dir = editOptimizer((_t, meta) => (meta.optimizer = 'muon'));
    expect(refusal(dir)).toBe(`${opt(dir)}: __metadata__.optimizer: "muon", but this run's train.optimizer is adamw`);
  });

  test('no optimizer in the metadata is refused', () => {
    const dir = editOptimizer((_t, meta) => void delete meta.optimizer);
    expect(refusal(dir)).toBe(`${opt(dir)}: __metadata__.optimizer: missing`);
  });

  test('an AdamW checkpoint does not resume a Muon run', () => {
    const muon = newTrainer(loadConfig(TINY, ['backend=cpu', 'train.optimizer=muon']));
    try {
      const msg = refusal(saved, muon);
      expect(msg).toMatch(/__metadata__\.optimizer: "adamw", but this run's train\.optimizer is muon/);
    } finally {
      muon.dispose();
    }
  });
});

test('an extra tensor in the checkpoint model is refused naming it', () => {
  const dir = copy((d) => {
    const file = path.join(d, 'model.safetensors');
    const { tensors, metadata } = loadSafetensors(file);
    tensors['lm_head.bias'] = { shape: [320], data: new Float32Array(320) };
    saveSafetensors(file, tensors, metadata);
  });
  expect(refusal(dir)).toMatch(/model\.safetensors: unexpected tensor lm_head\.bias/);
});

test('resume from a state.json without step is refused and leaves every metrics row', async () => {
  const runDir = path.join(tmp(), 'run');
  const sets = ['backend=cpu', 'train.tokens=512', 'train.warmup_tokens=128', 'train.ckpt_every_tokens=128', 'train.eval_every_tokens=0'];
  const first = await trainRun({ config: loadConfig(TINY, sets), runDir, stopAfterSteps: 2 });
  expect(first.summary).toMatchObject({ status: 'interrupted', step: 2 });
  const rows = readMetrics(runDir);
  expect(rows).toHaveLength(2);
  const stateFile = path.join(runDir, 'ckpt', 'step-2', 'state.json');
  const { step: _drop, ...noStep } = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
  fs.writeFileSync(stateFile, JSON.stringify(noStep));
  await expect(trainRun({ config: loadConfig(TINY, sets), runDir, resume: true })).rejects.toThrow(new UserError(`${stateFile}: step: missing`));
  expect(readMetrics(runDir)).toEqual(rows);
});
