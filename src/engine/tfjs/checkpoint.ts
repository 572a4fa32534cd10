/**
 * TensorFlow.js tensors to and from the run folder's checkpoint files (src/runfolder/): one download per tensor on
 * save, one upload per tensor on load. The file formats and their checks live in the run-folder module.
 */
import * as tf from '@tensorflow/tfjs';
import { paramInfos, type Params } from '../../model/params';
import type { ModelSpec } from '../../model/spec';
import { readModelFolder, writeModelFolder, type CheckpointConfigJson } from '../../runfolder/checkpoint';
import type { StoredTensor } from '../../runfolder/safetensors';
import { readTrainingCheckpoint, writeTrainingCheckpoint, type OptimizerStateLayout, type TrainState } from '../../runfolder/training-checkpoint';
import type { Trainer } from './trainer';

async function hostCopies(record: Record<string, tf.Tensor>): Promise<Record<string, StoredTensor>> {
  const out: Record<string, StoredTensor> = {};
  for (const [name, t] of Object.entries(record)) out[name] = { shape: t.shape, data: (await t.data()) as Float32Array | Int32Array };
  return out;
}

/** Write a model folder from live parameters. */
export async function saveModel(dir: string, P: Params, s: ModelSpec, tokenizer: CheckpointConfigJson['tokenizer']): Promise<void> {
  const chosen: Record<string, tf.Tensor> = {};
  for (const p of paramInfos(s)) chosen[p.name] = P[p.name];
  writeModelFolder(dir, await hostCopies(chosen), s, tokenizer);
}

/** Load a model folder as variables; everything is checked before any variable is made. */
export function loadModel(dir: string): { spec: ModelSpec; params: Record<string, tf.Variable>; config: CheckpointConfigJson } {
  const { spec, weights, config } = readModelFolder(dir);
  const params: Record<string, tf.Variable> = {};
  for (const p of paramInfos(spec)) {
    const value = tf.tensor(weights[p.name], p.shape, 'float32');
    params[p.name] = tf.variable(value, true);
    value.dispose();
  }
  return { spec, params, config };
}

export async function saveTrainingCheckpoint(runDir: string, trainer: Trainer, state: TrainState, tokenizer: CheckpointConfigJson['tokenizer']): Promise<string> {
  const chosen: Record<string, tf.Tensor> = {};
  for (const p of paramInfos(trainer.spec)) chosen[p.name] = trainer.params[p.name];
  const model = await hostCopies(chosen);
  const record = trainer.optimizer.stateTensors();
  let optimizer: Record<string, StoredTensor>;
  try {
    optimizer = await hostCopies(record);
  } finally {
    tf.dispose(Object.values(record));
  }
  return writeTrainingCheckpoint(runDir, { spec: trainer.spec, tokenizer, model, optimizerName: trainer.cfg.train.optimizer, optimizer }, state);
}

/** The keys, shapes and dtypes this trainer's optimizer keeps: what a checkpoint must hold, exactly. */
function optimizerLayout(trainer: Trainer): OptimizerStateLayout {
  const live = trainer.optimizer.stateTensors();
  const layout: OptimizerStateLayout = new Map(Object.entries(live).map(([key, t]) => [key, { shape: t.shape, dtype: t.dtype === 'int32' ? 'I32' : 'F32' }]));
  tf.dispose(Object.values(live));
  return layout;
}

/**
 * Restore parameters and optimizer state bit-exactly into a freshly built trainer. Every file is read and checked
 * before the first assignment, so a refused checkpoint leaves the trainer as it was.
 */
export function restoreTrainingCheckpoint(dir: string, trainer: Trainer): TrainState {
  const { state, weights, optimizer } = readTrainingCheckpoint(dir, trainer.spec, { name: trainer.cfg.train.optimizer, layout: optimizerLayout(trainer) });
  const record: Record<string, tf.Tensor> = {};
  for (const [name, t] of Object.entries(optimizer)) record[name] = tf.tensor(t.data as Float32Array | Int32Array, t.shape, t.data instanceof Int32Array ? 'int32' : 'float32');
  try {
    trainer.optimizer.loadState(record);
  } finally {
    tf.dispose(Object.values(record));
  }
  for (const p of paramInfos(trainer.spec)) {
    const v = tf.tensor(weights[p.name], p.shape, 'float32');
    trainer.params[p.name].assign(v);
    v.dispose();
  }
  return state;
}
