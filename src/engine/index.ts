/**
 * Which engine trains a run: `engine.name: tfjs` (TensorFlow.js in this process, the default that needs nothing
 * but Node), `torch` (PyTorch in a child process: GPUs, bf16, torchrun), or `auto` (torch when an interpreter
 * imports PyTorch, else tfjs).
 */
import type { Config } from '../config/types';
import { findTorch, torchEngine } from './torch';
import { tfjsEngine } from './tfjs/train';
import type { TrainingEngine } from './types';

export interface EngineChoice {
  engine: TrainingEngine;
  /** Why this engine: what was asked for, and for `auto` what was found. */
  reason: string;
}

export function chooseEngine(cfg: Pick<Config, 'engine'>): EngineChoice {
  switch (cfg.engine.name) {
    case 'tfjs':
      return { engine: tfjsEngine, reason: 'engine.name is tfjs' };
    case 'torch':
      return { engine: torchEngine, reason: 'engine.name is torch' };
    case 'auto': {
      const found = findTorch(cfg);
      if ('probe' in found) return { engine: torchEngine, reason: `engine.name auto: ${found.probe.python} imports torch ${found.probe.torch}` };
      return { engine: tfjsEngine, reason: `engine.name auto: no PyTorch (${found.reasons.join('; ')}), so tfjs` };
    }
  }
}
