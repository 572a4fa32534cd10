/**
 * Training checkpoints: `ckpt/step-N/` holds the model (model.safetensors + config.json, loadable alone by eval and
 * generate), the optimizer state, and `state.json` (step, tokens, schedule position, data cursor, running stats).
 * The folder is written under a temporary name and renamed when complete, so a process killed mid-write leaves
 * only a `.partial` folder that resume ignores.
 */
import * as fs from 'fs';
import * as path from 'path';
import * as tf from '@tensorflow/tfjs';
import { UserError } from '../errors';
import { saveModel, type CheckpointConfigJson } from '../model/checkpoint';
import { loadSafetensors, saveSafetensors, type StoredTensor } from '../model/safetensors';
import { paramInfos } from '../model/params';
import { writeJson } from './runfolder';
import type { Trainer } from './trainer';

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

/** Test hook: pause between files so a test can kill the process mid-checkpoint. */
function testPause(): void {
  const ms = Number(process.env.MLACTL_TEST_CKPT_PAUSE_MS ?? 0);
  if (ms > 0) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}

export async function saveTrainingCheckpoint(runDir: string, trainer: Trainer, state: TrainState, tokenizer: CheckpointConfigJson['tokenizer']): Promise<string> {
  const root = path.join(runDir, CKPT_DIR);
  const final = path.join(root, `step-${state.step}`);
  const partial = path.join(root, `.step-${state.step}.partial`);
  fs.rmSync(partial, { recursive: true, force: true });
  fs.mkdirSync(partial, { recursive: true });
  await saveModel(partial, trainer.params, trainer.spec, tokenizer);
  testPause();
  const record = trainer.optimizer.stateTensors();
  const stored: Record<string, StoredTensor> = {};
  for (const [name, t] of Object.entries(record)) {
    stored[name] = { shape: t.shape, data: (await t.data()) as Float32Array | Int32Array };
  }
  tf.dispose(Object.values(record));
  saveSafetensors(path.join(partial, 'optimizer.safetensors'), stored, { optimizer: trainer.cfg.train.optimizer });
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

/** Restore parameters and optimizer state bit-exactly into a freshly built trainer. */
export function restoreTrainingCheckpoint(dir: string, trainer: Trainer): TrainState {
  const file = path.join(dir, 'model.safetensors');
  const { tensors } = loadSafetensors(file);
  for (const p of paramInfos(trainer.spec)) {
    const t = tensors[p.name];
    if (!t || t.shape.join(',') !== p.shape.join(',')) throw new UserError(`${file}: tensor ${p.name} missing or of another shape than the config's model`);
    const v = tf.tensor(t.data as Float32Array, p.shape, 'float32');
    trainer.params[p.name].assign(v);
    v.dispose();
  }
  const opt = loadSafetensors(path.join(dir, 'optimizer.safetensors')).tensors;
  const record: Record<string, tf.Tensor> = {};
  for (const [name, t] of Object.entries(opt)) record[name] = tf.tensor(t.data as Float32Array | Int32Array, t.shape, t.data instanceof Int32Array ? 'int32' : 'float32');
  try {
    trainer.optimizer.loadState(record);
  } finally {
    tf.dispose(Object.values(record));
  }
  return JSON.parse(fs.readFileSync(path.join(dir, 'state.json'), 'utf8')) as TrainState;
}
