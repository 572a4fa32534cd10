// The optimizer object: it assigns each parameter to AdamW or Muon once, keeps their state in variables, and loops.
// All update math lives in adamw.ts and muon.ts; clipping (gradients.ts) and the schedule are the training loop's.
import * as tf from '@tensorflow/tfjs';
import type { TrainConfig } from '../config/types';
import { UserError } from '../errors';
import { adamwStep } from './adamw';
import { assignParam, type ParamAssignment } from './groups';
import { muonStep } from './muon';

/** State names follow PyTorch's optimizer state keys, so a checkpoint reads the same in both worlds. */
const EXP_AVG = 'exp_avg';
const EXP_AVG_SQ = 'exp_avg_sq';
const MOMENTUM_BUFFER = 'momentum_buffer';
const STEP_KEY = 'step';

interface ParamSlot {
  name: string;
  param: tf.Variable;
  group: ParamAssignment;
  /** exp_avg / exp_avg_sq for AdamW, momentum_buffer for Muon. */
  state: Map<string, tf.Variable>;
}

// tfjs registers variable names globally, so every instance gets its own prefix (sweeps hold several at once).
let instanceCounter = 0;

export class Optimizer {
  private readonly slots: ParamSlot[] = [];
  private stepCount = 0;
  private disposed = false;

  constructor(params: Map<string, tf.Variable>, private readonly cfg: TrainConfig) {
    const prefix = `optimizer${instanceCounter++}`;
    for (const [name, param] of params) {
      const group = assignParam(name, param.shape, cfg.optimizer);
      const keys = group.opt === 'adamw' ? [EXP_AVG, EXP_AVG_SQ] : [MOMENTUM_BUFFER];
      const state = new Map<string, tf.Variable>();
      for (const key of keys) {
        // trainable = false keeps optimizer state out of tf.variableGrads' default variable list; tidy frees the
        // zeros the variable was copied from (tidy never disposes variables).
        state.set(key, tf.tidy(() => tf.variable(tf.zerosLike(param), false, `${prefix}/${name}.${key}`)));
      }
      this.slots.push({ name, param, group, state });
    }
  }

  /** Optimizer steps taken so far (restored by loadState). */
  get steps(): number {
    return this.stepCount;
  }

  /** Each parameter's optimizer and decay flag, for logging the grouping at the start of a run. */
  assignments(): Map<string, ParamAssignment> {
    return new Map(this.slots.map((s) => [s.name, { ...s.group }]));
  }

  /**
   * Applies one update to every parameter with learning rate `lr` (the schedule's value; both groups use it).
   * `grads` must hold exactly one gradient per parameter, of its shape. The caller keeps ownership of `grads`.
   */
  step(grads: Map<string, tf.Tensor>, lr: number): void {
    this.assertAlive();
    for (const name of grads.keys()) {
      if (!this.slots.some((s) => s.name === name)) throw new Error(`Optimizer.step: gradient for unknown parameter ${name}`);
    }
    for (const slot of this.slots) {
      const grad = grads.get(slot.name);
      if (grad === undefined) throw new Error(`Optimizer.step: no gradient for parameter ${slot.name}`);
      if (!tf.util.arraysEqual(grad.shape, slot.param.shape)) {
        throw new Error(`Optimizer.step: gradient for ${slot.name} has shape [${grad.shape}], parameter has [${slot.param.shape}]`);
      }
    }
    const t = this.stepCount + 1;
    const weightDecayFor = (slot: ParamSlot): number => (slot.group.weightDecay ? this.cfg.weight_decay : 0);
    for (const slot of this.slots) {
      const grad = grads.get(slot.name) as tf.Tensor;
      // assign() takes over the new tensor's data and releases the old; tidy then drops the temporaries.
      tf.tidy(() => {
        if (slot.group.opt === 'adamw') {
          const m = slot.state.get(EXP_AVG) as tf.Variable;
          const v = slot.state.get(EXP_AVG_SQ) as tf.Variable;
          const next = adamwStep(slot.param, grad, m, v, t, {
            lr,
            beta1: this.cfg.beta1,
            beta2: this.cfg.beta2,
            eps: this.cfg.adam_eps,
            weightDecay: weightDecayFor(slot),
          });
          slot.param.assign(next.p);
          m.assign(next.m);
          v.assign(next.v);
        } else {
          const m = slot.state.get(MOMENTUM_BUFFER) as tf.Variable;
          const next = muonStep(slot.param, grad, m, {
            lr,
            momentum: this.cfg.muon_momentum,
            weightDecay: weightDecayFor(slot),
            nesterov: true,
          });
          slot.param.assign(next.p);
          m.assign(next.m);
        }
      });
    }
    this.stepCount = t;
  }

  /**
   * The full state for a checkpoint: `<param>.exp_avg`, `<param>.exp_avg_sq`, `<param>.momentum_buffer` and an int32
   * scalar `step`. Every tensor is new (clones share the data, so this is cheap) and the caller disposes them.
   */
  stateTensors(): Record<string, tf.Tensor> {
    this.assertAlive();
    const record: Record<string, tf.Tensor> = {};
    for (const slot of this.slots) {
      for (const [key, variable] of slot.state) record[`${slot.name}.${key}`] = tf.clone(variable);
    }
    record[STEP_KEY] = tf.scalar(this.stepCount, 'int32');
    return record;
  }

  /**
   * Restores a record from stateTensors() exactly. Every expected key must be present with the right shape and no
   * other key may be; a mismatch means the checkpoint belongs to another model or optimizer (UserError). The caller
   * keeps ownership of `record`.
   */
  loadState(record: Record<string, tf.Tensor>): void {
    this.assertAlive();
    const expected = new Set<string>([STEP_KEY]);
    for (const slot of this.slots) for (const key of slot.state.keys()) expected.add(`${slot.name}.${key}`);
    for (const key of Object.keys(record)) {
      if (!expected.has(key)) throw new UserError(`optimizer state has unexpected key ${key} (checkpoint from another model or optimizer?)`);
    }
    for (const key of expected) {
      if (!(key in record)) throw new UserError(`optimizer state is missing key ${key}`);
    }
    const stepTensor = record[STEP_KEY];
    if (stepTensor.size !== 1) throw new UserError(`optimizer state key ${STEP_KEY} must be a scalar, got shape [${stepTensor.shape}]`);
    const restoredStep = stepTensor.dataSync()[0];
    if (!Number.isInteger(restoredStep) || restoredStep < 0) {
      throw new UserError(`optimizer state key ${STEP_KEY} must be a non-negative integer, got ${restoredStep}`);
    }
    for (const slot of this.slots) {
      for (const [key, variable] of slot.state) {
        const value = record[`${slot.name}.${key}`];
        if (!tf.util.arraysEqual(value.shape, variable.shape)) {
          throw new UserError(`optimizer state key ${slot.name}.${key} has shape [${value.shape}], expected [${variable.shape}]`);
        }
      }
    }
    // Validation is complete before anything is assigned, so a bad record leaves the optimizer untouched.
    for (const slot of this.slots) {
      for (const [key, variable] of slot.state) {
        tf.tidy(() => variable.assign(tf.cast(record[`${slot.name}.${key}`], variable.dtype)));
      }
    }
    this.stepCount = restoredStep;
  }

  /** Frees the state variables; the parameters belong to the model and are left alone. */
  dispose(): void {
    if (this.disposed) return;
    for (const slot of this.slots) for (const variable of slot.state.values()) variable.dispose();
    this.disposed = true;
  }

  private assertAlive(): void {
    if (this.disposed) throw new Error('Optimizer used after dispose()');
  }
}
