/**
 * Sweep configs: a base config, fixed overrides and axes, expanded into runs. A sweep file is data:
 *
 *   name: lr-ladder                    # the sweep folder's name (default: the file's name)
 *   base: ../models/demo.yaml          # the config every run starts from, relative to this file
 *   set:                               # overrides for every run (optional)
 *     train.tokens: 409600
 *   axes:                              # the cross product of these, the first axis outermost
 *     model.variant: [baseline, qk-clip, qk-norm]
 *     train.lr: {log: [1e-3, 3e-2], num: 4}   # a log range: num values from..to, 3 significant digits
 *     seed: [0, 1]
 *   slurm: {partition: gpu, time: '02:00:00', gres: 'gpu:1'}   # for --executor slurm (optional)
 *
 * Every key path is checked against the config schema and every run's config is resolved and validated here, so a
 * bad sweep is refused before a folder exists or a job is submitted.
 */
import * as path from 'path';
import { parse as parseYaml } from 'yaml';
import { loadConfig, readYamlMapping } from '../config/load';
import type { Config } from '../config/types';
import { closest, describeValue, isPlainObject, keyPathProblem } from '../config/validate';
import { printable, UserError } from '../errors';
import type { AxisValue, SlurmOptions, SweepRun } from './types';

/** Where a sweep error points: the key in the sweep file and its line. */
function sweepError(display: string, keyPath: string, detail: string, line?: number): UserError {
  return new UserError(printable(`sweep error at ${keyPath}: ${detail} [${display}${line === undefined ? '' : `:${line}`}]`));
}

export interface SweepSpec {
  name: string;
  /** The sweep file, absolute and as shown in messages. */
  source: string;
  display: string;
  /** The base config, absolute. */
  base: string;
  set: { key: string; value: AxisValue; origin: string }[];
  axes: { key: string; values: AxisValue[]; origin: string }[];
  slurm: SlurmOptions;
  /** Whether the file has a `slurm:` section at all. */
  hasSlurm: boolean;
}

export interface PlannedRun extends SweepRun {
  config: Config;
}

export interface SweepPlan {
  spec: SweepSpec;
  /** The base config with `set:` applied and the sweep's name: what base.resolved.yaml holds. */
  baseConfig: Config;
  runs: PlannedRun[];
}

const TOP_KEYS = ['name', 'base', 'set', 'axes', 'slurm'];
const RUN_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export const DEFAULT_SLURM: SlurmOptions = {
  partition: null, account: null, qos: null, time: null, gres: null, cpus_per_task: null, mem: null, throttle: null,
  signal_before_s: 180, requeue: true, setup: [], sbatch: [], node: null,
};

/** Reads and checks a sweep file, and expands and validates its runs. */
export function loadSweep(file: string): SweepPlan {
  return planSweep(readSweepSpec(file));
}

export function readSweepSpec(file: string): SweepSpec {
  const { display, data, lineOf } = readYamlMapping(file);
  const fail = (keyPath: string, detail: string): never => {
    throw sweepError(display, keyPath, detail, lineOf.get(keyPath));
  };
  const source = path.resolve(file);
  for (const key of Object.keys(data)) {
    if (!TOP_KEYS.includes(key)) {
      const near = closest(key, TOP_KEYS);
      fail(key, `unknown key (${near ? `did you mean ${near}?` : `a sweep file has ${TOP_KEYS.join(', ')}`})`);
    }
  }

  const defaultName = path.basename(source).replace(/\.ya?ml$/i, '');
  const name = data.name === undefined ? defaultName : data.name;
  if (typeof name !== 'string' || !RUN_NAME.test(name)) {
    fail('name', `expected a name of letters, digits, '.', '_' or '-' (it names the sweep folder), got ${describeValue(name)}`);
  }

  if (typeof data.base !== 'string' || data.base.trim() === '') {
    fail('base', `expected the path of the config every run starts from (relative to ${display}), got ${describeValue(data.base)}`);
  }
  const base = path.resolve(path.dirname(source), data.base as string);

  const origin = (keyPath: string) => `${display}:${lineOf.get(keyPath) ?? '?'}`;
  const checkKey = (section: string, key: string): void => {
    const keyPath = `${section}.${key}`;
    const problem = keyPathProblem(key);
    if (problem) fail(keyPath, problem);
    if (key === 'name') fail(keyPath, 'the runs take the sweep\'s name (top-level `name:`); their folders tell them apart');
    if (key.startsWith('experiment.')) fail(keyPath, 'a sweep trains single runs: put variants, seeds and learning rates on its axes instead of experiment lists');
  };

  const setSection = data.set ?? {};
  if (!isPlainObject(setSection)) fail('set', `expected a mapping of config keys to values, got ${describeValue(setSection)}`);
  const set = Object.entries(setSection as Record<string, unknown>).map(([key, value]) => {
    checkKey('set', key);
    return { key, value: axisValue(value, () => fail(`set.${key}`, `expected a string, number or boolean, got ${describeValue(value)}`)), origin: origin(`set.${key}`) };
  });

  if (!isPlainObject(data.axes) || Object.keys(data.axes).length === 0) {
    fail('axes', `expected a mapping of config keys to lists of values, e.g. \`train.lr: [1e-3, 3e-3]\`; got ${describeValue(data.axes)}`);
  }
  const axes = Object.entries(data.axes as Record<string, unknown>).map(([key, raw]) => {
    const keyPath = `axes.${key}`;
    checkKey('axes', key);
    if (set.some((s) => s.key === key)) fail(keyPath, `also under set: a key is either fixed or an axis`);
    return { key, values: axisValues(raw, (detail) => fail(keyPath, detail)), origin: origin(keyPath) };
  });

  let slurm = DEFAULT_SLURM;
  if (data.slurm !== undefined) slurm = readSlurm(data.slurm, (keyPath, detail) => fail(keyPath, detail));
  return { name: name as string, source, display, base, set, axes, slurm, hasSlurm: data.slurm !== undefined };
}

function axisValue(value: unknown, bad: () => never): AxisValue {
  if (typeof value === 'string' || typeof value === 'boolean') return value;
  if (typeof value === 'number' && Number.isFinite(value)) return value;
  return bad();
}

/** A list of values, or `{log: [from, to], num: N}`: N values evenly spaced in log space, 3 significant digits. */
export function axisValues(raw: unknown, fail: (detail: string) => never): AxisValue[] {
  let values: AxisValue[];
  if (Array.isArray(raw)) {
    if (raw.length === 0) fail('empty axis: give at least one value');
    values = raw.map((v) => axisValue(v, () => fail(`expected strings, numbers or booleans, got ${describeValue(v)} in the list`)));
  } else if (isPlainObject(raw) && 'log' in raw) {
    const extra = Object.keys(raw).find((k) => k !== 'log' && k !== 'num');
    if (extra) fail(`unknown key ${extra} in a log range (it has log: [from, to] and num)`);
    const ends = raw.log;
    if (!Array.isArray(ends) || ends.length !== 2 || !ends.every((v) => typeof v === 'number' && Number.isFinite(v) && v > 0)) {
      fail(`a log range needs log: [from, to] with two positive numbers, got ${describeValue(ends)}`);
    }
    const num = raw.num;
    if (typeof num !== 'number' || !Number.isInteger(num) || num < 1) fail(`a log range needs num: a positive integer (how many values), got ${describeValue(num)}`);
    const [from, to] = ends as number[];
    const n = num as number;
    // Rounded so that ids, tables and --set values read the same number (3.16e-3, not 0.0031622776601683794).
    values = Array.from({ length: n }, (_, i) => Number((n === 1 ? from : from * (to / from) ** (i / (n - 1))).toPrecision(3)));
  } else {
    fail(`expected a list of values or a log range {log: [from, to], num: N}, got ${describeValue(raw)}${raw !== null && !isPlainObject(raw) ? ' (a single value belongs under set:)' : ''}`);
  }
  const seen = new Set<string>();
  for (const v of values!) {
    const k = JSON.stringify(v);
    if (seen.has(k)) fail(`the value ${k} appears twice (two runs would share one folder)`);
    seen.add(k);
  }
  return values!;
}

const SBATCH_VALUE = /^[^\s#'"`$\\;&|<>()]+$/;

function readSlurm(raw: unknown, fail: (keyPath: string, detail: string) => never): SlurmOptions {
  if (!isPlainObject(raw)) return fail('slurm', `expected a mapping of Slurm options, got ${describeValue(raw)}`);
  const out: SlurmOptions = { ...DEFAULT_SLURM, setup: [], sbatch: [] };
  const keys = Object.keys(DEFAULT_SLURM);
  for (const [key, value] of Object.entries(raw)) {
    const keyPath = `slurm.${key}`;
    const bad = (expected: string): never => fail(keyPath, `expected ${expected}, got ${describeValue(value)}`);
    switch (key) {
      case 'partition':
      case 'account':
      case 'qos':
      case 'gres':
      case 'mem':
      case 'time': {
        const text = key === 'time' && typeof value === 'number' && Number.isInteger(value) && value > 0 ? String(value) : value;
        if (typeof text !== 'string' || !SBATCH_VALUE.test(text)) bad('a value without spaces or shell characters');
        out[key] = text as string;
        break;
      }
      case 'node':
        if (typeof value !== 'string' || value.trim() === '' || /[\0-\x1f]/.test(value)) bad('the path of node on the compute nodes');
        out.node = value as string;
        break;
      case 'cpus_per_task':
      case 'throttle':
        if (typeof value !== 'number' || !Number.isInteger(value) || value < 1) bad('a positive integer');
        out[key] = value as number;
        break;
      case 'signal_before_s':
        if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > 65535) bad('seconds in 0..65535 (0: no signal)');
        out.signal_before_s = value as number;
        break;
      case 'requeue':
        if (typeof value !== 'boolean') bad('true or false');
        out.requeue = value as boolean;
        break;
      case 'setup':
        if (!Array.isArray(value) || !value.every((l) => typeof l === 'string' && !/[\n\r\0]/.test(l))) bad('a list of shell lines');
        out.setup = value as string[];
        break;
      case 'sbatch':
        if (!Array.isArray(value) || !value.every((o) => typeof o === 'string' && /^--?[A-Za-z]/.test(o) && !/[\n\r\0]/.test(o))) bad('a list of sbatch options such as --constraint=h100');
        out.sbatch = value as string[];
        break;
      default: {
        const near = closest(key, keys);
        fail(keyPath, `unknown Slurm option (${near ? `did you mean slurm.${near}?` : `known: ${keys.join(', ')}`})`);
      }
    }
  }
  return out;
}

/** `key=value` for `train --set`, the value written so that YAML reads it back as the same value. */
export function setArg(key: string, value: AxisValue): string {
  const plain = String(value);
  let back: unknown;
  try {
    back = parseYaml(plain);
  } catch {
    back = undefined;
  }
  return `${key}=${back === value ? plain : JSON.stringify(value)}`;
}

/** How an axis is named inside run ids: the variant alone, lr3e-3, s1, else the key's last part. */
const ID_LABELS: Record<string, string> = { 'model.variant': '', 'train.lr': 'lr', seed: 's' };

function idValue(value: AxisValue): string {
  if (typeof value === 'number' && !Number.isInteger(value)) return value.toExponential().replace('e+', 'e');
  return String(value).replace(/[^A-Za-z0-9.-]/g, '-');
}

/** Run ids such as `qk-norm_lr3e-3_s1`: one part per axis, in axis order. */
export function runIds(axes: { key: string; values: AxisValue[] }[], combos: AxisValue[][]): string[] {
  const short = axes.map((a) => ID_LABELS[a.key] ?? a.key.split('.').pop()!);
  // Two axes with the same last part (data.seed and a hypothetical x.seed) are told apart by their whole paths.
  const labels = short.map((l, i) => (short.indexOf(l) !== short.lastIndexOf(l) ? axes[i].key.replace(/\./g, '-') : l));
  return combos.map((combo) => {
    const id = combo.map((v, i) => `${labels[i]}${idValue(v)}`).join('_');
    return /^[A-Za-z0-9]/.test(id) ? id : `r${id}`;
  });
}

/** Expands the axes (first axis outermost) and resolves and validates every run's config. */
export function planSweep(spec: SweepSpec): SweepPlan {
  const setArgs = spec.set.map((s) => setArg(s.key, s.value));
  const setOrigins = spec.set.map((s) => s.origin);
  const baseConfig = loadConfig(spec.base, setArgs, setOrigins);
  const e = baseConfig.experiment;
  if (e.variants.length + e.seeds.length + e.lrs.length > 0) {
    throw sweepError(spec.display, 'base', `${path.relative(process.cwd(), spec.base) || spec.base} is an experiment (experiment.variants, seeds or lrs are set): a sweep trains single runs, so put those lists on its axes`);
  }
  baseConfig.name = spec.name;

  let combos: AxisValue[][] = [[]];
  for (const axis of spec.axes) combos = combos.flatMap((c) => axis.values.map((v) => [...c, v]));
  const ids = runIds(spec.axes, combos);
  const firstOf = new Map<string, number>();
  ids.forEach((id, i) => {
    const j = firstOf.get(id);
    if (j !== undefined) {
      throw sweepError(spec.display, 'axes', `runs ${JSON.stringify(combos[j])} and ${JSON.stringify(combos[i])} would both be named ${id}; make the values differ in more than case or punctuation`);
    }
    firstOf.set(id, i);
  });

  const runs = combos.map((combo, i): PlannedRun => {
    const overrides: Record<string, AxisValue> = {};
    spec.axes.forEach((axis, k) => (overrides[axis.key] = combo[k]));
    const axisArgs = spec.axes.map((axis, k) => setArg(axis.key, combo[k]));
    const config = loadConfig(spec.base, [...setArgs, ...axisArgs], [...setOrigins, ...spec.axes.map((axis) => axis.origin)]);
    config.name = spec.name;
    return { id: ids[i], dir: `runs/${ids[i]}`, overrides, config };
  });
  return { spec, baseConfig, runs };
}

/** The `--set` arguments that turn base.resolved.yaml into this run's config. */
export function runSetArgs(run: SweepRun): string[] {
  return Object.entries(run.overrides).map(([key, value]) => setArg(key, value));
}
