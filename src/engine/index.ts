/**
 * Which engine trains a run: `engine: tfjs` (TensorFlow.js in this process, the default that needs nothing but
 * Node), `engine: torch` (PyTorch in a child process: GPUs, bf16, torchrun), or `auto`.
 */
import type { Config } from '../config/types';
import { tfjsEngine } from './tfjs/train';
import type { TrainingEngine } from './types';

export async function engineFor(_cfg: Config): Promise<TrainingEngine> {
  return tfjsEngine;
}
