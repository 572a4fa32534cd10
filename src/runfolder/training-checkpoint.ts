/**
 * Training checkpoints: `ckpt/step-N/` holds the model (model.safetensors + config.json, loadable alone by eval and
 * generate), the optimizer state, and `state.json` (step, tokens, schedule position, data cursor, running stats).
 * The folder is written under a temporary name and renamed when complete, so a process killed mid-write leaves
 * only a `.partial` folder that resume ignores.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';
import { readModelTensors, writeModelFolder, type CheckpointConfigJson } from './checkpoint';
import { dtypeOf, loadSafetensors, saveSafetensors, showName, type StoredTensor } from './safetensors';
import type { ModelSpec } from '../model/spec';
import { writeJson } from './atomic';
import { fieldReader, isObject } from './fields';

export interface TrainState {
  step: number;
  tokens: number;
  /** The data cursor: batches are a pure function of (data.seed, step), so the step is the whole cursor. */
  data_cursor: { seed: number; step: number };
  schedule: { step: number; total_steps: number; warmup_steps: number };
  elapsed_s: number;
  best_val_loss: number | null;
  last_val_loss: number | null;
  heads_clipped_total: number;
  max_logit_peak: number | null;
}

export const CKPT_DIR = 'ckpt';

/** The state of a run before its first step: what a fresh run's step-0 checkpoint records. */
export function freshTrainState(dataSeed: number, totalSteps: number, warmupSteps: number): TrainState {
  return {
    step: 0,
    tokens: 0,
    data_cursor: { seed: dataSeed, step: 0 },
    schedule: { step: 0, total_steps: totalSteps, warmup_steps: warmupSteps },
    elapsed_s: 0,
    best_val_loss: null,
    last_val_loss: null,
    heads_clipped_total: 0,
    max_logit_peak: null,
  };
}

/** Test hook: pause between files so a test can kill the process mid-checkpoint. */
function testPause(): void {
  const ms = Number(process.env.MLACTL_TEST_CKPT_PAUSE_MS ?? 0);
  if (ms > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

/** What an engine hands over to be written as one training checkpoint: host copies, no framework tensors. */
export interface TrainingCheckpointParts {
  spec: ModelSpec;
  tokenizer: CheckpointConfigJson['tokenizer'];
  model: Record<string, StoredTensor>;
  /** `__metadata__.optimizer`: adamw or muon. */
  optimizerName: string;
  optimizer: Record<string, StoredTensor>;
}

/**
 * Write `ckpt/step-N/` for state.step: every file under `.step-N.partial/`, then one rename, so a `step-N` folder
 * is always whole whatever interrupts the write.
 */
export function writeTrainingCheckpoint(runDir: string, parts: TrainingCheckpointParts, state: TrainState): string {
  const root = path.join(runDir, CKPT_DIR);
  const final = path.join(root, `step-${state.step}`);
  const partial = path.join(root, `.step-${state.step}.partial`);
  fs.rmSync(partial, { recursive: true, force: true });
  fs.mkdirSync(partial, { recursive: true });
  writeModelFolder(partial, parts.model, parts.spec, parts.tokenizer);
  testPause();
  saveSafetensors(path.join(partial, 'optimizer.safetensors'), parts.optimizer, { optimizer: parts.optimizerName });
  writeJson(path.join(partial, 'state.json'), state);
  fs.rmSync(final, { recursive: true, force: true });
  fs.renameSync(partial, final);
  return final;
}

/** The newest complete checkpoint of a run, or null. */
export function latestCheckpoint(runDir: string): { dir: string; step: number } | null {
  const root = path.join(runDir, CKPT_DIR);
  if (!fs.existsSync(root)) return null;
  const steps = fs
    .readdirSync(root)
    .map((n) => /^step-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => !!m && fs.existsSync(path.join(root, m[0], 'state.json')))
    .map((m) => Number(m[1]))
    .sort((a, b) => b - a);
  return steps.length ? { dir: path.join(root, `step-${steps[0]}`), step: steps[0] } : null;
}

export function listCheckpoints(runDir: string): { dir: string; step: number }[] {
  const root = path.join(runDir, CKPT_DIR);
  if (!fs.existsSync(root)) return [];
  return fs
    .readdirSync(root)
    .map((n) => /^step-(\d+)$/.exec(n))
    .filter((m): m is RegExpExecArray => !!m && fs.existsSync(path.join(root, m[0], 'model.safetensors')))
    .map((m) => ({ dir: path.join(root, m[0]), step: Number(m[1]) }))
    .sort((a, b) => a.step - b.step);
}

/**
 * Checks a parsed state.json: every key of the format's table, with its type, and the steps that must agree.
 * Refusals name the file and the key. `folderStep` is N of the `step-N` folder it came from, when there is one.
 */
export function parseTrainState(parsed: unknown, source: string, folderStep?: number): TrainState {
  const { root: raw, fail, shown, get } = fieldReader(parsed, source);
  const count = (o: Record<string, unknown>, key: string, full = key): number => {
    const v = get(o, key, full);
    return Number.isSafeInteger(v) && (v as number) >= 0 ? (v as number) : fail(full, `must be a non-negative integer, got ${shown(v)}`);
  };
  const object = (key: string): Record<string, unknown> => {
    const v = get(raw, key);
    return isObject(v) ? v : fail(key, `must be an object, got ${shown(v)}`);
  };
  const numberOrNull = (key: string): number | null => {
    const v = get(raw, key);
    return v === null || (typeof v === 'number' && Number.isFinite(v)) ? v : fail(key, `must be a number or null, got ${shown(v)}`);
  };

  const step = count(raw, 'step');
  // The folder name is what latestCheckpoint picks by; a state of another step would resume from the wrong place.
  if (folderStep !== undefined && step !== folderStep) fail('step', `${step}, but the folder is step-${folderStep}`);
  const tokens = count(raw, 'tokens');
  const cursor = object('data_cursor');
  const data_cursor = { seed: count(cursor, 'seed', 'data_cursor.seed'), step: count(cursor, 'step', 'data_cursor.step') };
  if (data_cursor.step !== step) fail('data_cursor.step', `${data_cursor.step}, but step is ${step}`);
  const sched = object('schedule');
  const schedule = {
    step: count(sched, 'step', 'schedule.step'),
    total_steps: count(sched, 'total_steps', 'schedule.total_steps'),
    warmup_steps: count(sched, 'warmup_steps', 'schedule.warmup_steps'),
  };
  if (schedule.step !== step) fail('schedule.step', `${schedule.step}, but step is ${step}`);
  const elapsed = get(raw, 'elapsed_s');
  const elapsed_s = typeof elapsed === 'number' && Number.isFinite(elapsed) && elapsed >= 0 ? elapsed : fail('elapsed_s', `must be a non-negative number, got ${shown(elapsed)}`);
  return {
    step,
    tokens,
    data_cursor,
    schedule,
    elapsed_s,
    best_val_loss: numberOrNull('best_val_loss'),
    last_val_loss: numberOrNull('last_val_loss'),
    heads_clipped_total: count(raw, 'heads_clipped_total'),
    max_logit_peak: numberOrNull('max_logit_peak'),
  };
}

/** Reads and checks `<dir>/state.json` (parseTrainState), with the step of a `step-N` folder name. */
export function readTrainState(dir: string): TrainState {
  const file = path.join(dir, 'state.json');
  if (!fs.existsSync(file)) throw new UserError(`${file}: file not found`);
  let raw: unknown;
  try {
    raw = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UserError(`${file}: invalid JSON (${(e as Error).message.split('\n')[0]})`);
  }
  const m = /^step-(\d+)$/.exec(path.basename(path.resolve(dir)));
  return parseTrainState(raw, file, m ? Number(m[1]) : undefined);
}

/** The optimizer state an engine expects to restore: each key's shape and dtype. */
export type OptimizerStateLayout = Map<string, { shape: number[]; dtype: 'F32' | 'I32' }>;

/**
 * Checks optimizer.safetensors against the optimizer that will receive it: the same optimizer, exactly its state
 * keys (the format page: "a resume must find exactly these keys"), each of its dtype and shape, and a step equal
 * to state.json's. Refusals name the file and the key.
 */
function checkOptimizerState(file: string, stored: Record<string, StoredTensor>, metadata: Record<string, string>, optimizer: string, expected: OptimizerStateLayout, step: number): void {
  if (metadata.optimizer === undefined) throw new UserError(`${file}: __metadata__.optimizer: missing`);
  if (metadata.optimizer !== optimizer) {
    throw new UserError(`${file}: __metadata__.optimizer: ${JSON.stringify(metadata.optimizer)}, but this run's train.optimizer is ${optimizer}`);
  }
  for (const [key, want] of expected) {
    const t = stored[key];
    if (!t) throw new UserError(`${file}: ${key}: missing`);
    const dtype = dtypeOf(t.data);
    if (dtype !== want.dtype) throw new UserError(`${file}: ${key}: dtype ${dtype}, expected ${want.dtype}`);
    if (t.shape.join(',') !== want.shape.join(',') || t.shape.length !== want.shape.length) {
      throw new UserError(`${file}: ${key}: shape [${t.shape}], expected [${want.shape}]`);
    }
  }
  const extra = Object.keys(stored).sort().find((key) => !expected.has(key));
  if (extra !== undefined) throw new UserError(`${file}: ${showName(extra)}: unexpected tensor (not a state key of this model under ${optimizer})`);
  const saved = stored.step.data[0];
  if (saved !== step) throw new UserError(`${file}: step: ${saved}, but state.json step is ${step}`);
}

/**
 * Read a training checkpoint for a model of `spec` whose optimizer expects `layout`. Every file is read and checked
 * before anything is returned, so a refused checkpoint leaves the caller's model as it was.
 */
export function readTrainingCheckpoint(
  dir: string,
  spec: ModelSpec,
  optimizer: { name: string; layout: OptimizerStateLayout },
): { state: TrainState; weights: Record<string, Float32Array>; optimizer: Record<string, StoredTensor> } {
  const state = readTrainState(dir);
  const weights = readModelTensors(path.join(dir, 'model.safetensors'), spec);
  const optFile = path.join(dir, 'optimizer.safetensors');
  const opt = loadSafetensors(optFile);
  checkOptimizerState(optFile, opt.tensors, opt.metadata, optimizer.name, optimizer.layout, state.step);
  return { state, weights, optimizer: opt.tensors };
}
