// Tasks are data: one versioned YAML per task in configs/tasks/ names its format, delimiter and metrics; the
// format's parser (formats.ts) or generator (brown-tasks.ts) turns records into items.

import * as fs from 'fs';
import * as path from 'path';
import { parse as parseYaml } from 'yaml';
import { printable, UserError } from '../errors';
import { CONFIGS_DIR } from '../paths';
import { RAW_FORMATS, readRawTask, siblingLabelsFile } from './formats';
import { BROWN_GENERATORS, type BrownSplitOptions } from './brown-tasks';
import { METRICS } from './metrics';
import type { MetricName, TaskDefinition, TaskItem } from './types';

/** configs/tasks/ of the package; the same two levels up from src/eval/ and dist/eval/. */
export const DEFAULT_TASKS_DIR = path.join(CONFIGS_DIR, 'tasks');


const TASK_NAME = /^[a-z0-9][a-z0-9_-]*$/;

function formatInfo(format: string): { kind: TaskItem['kind']; metrics: MetricName[] } | undefined {
  return RAW_FORMATS[format] ?? BROWN_GENERATORS[format];
}

/** Read and check one task YAML. */
export function readTaskDefinition(file: string): TaskDefinition {
  let raw: unknown;
  try {
    raw = parseYaml(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    throw new UserError(printable(`${file}: ${(err as Error).message.split('\n')[0]}`));
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new UserError(`${printable(file)}: a task file must be a YAML mapping`);
  const doc = raw as Record<string, unknown>;
  // `what` may quote the file's own values.
  const bad = (key: string, what: string): never => {
    throw new UserError(printable(`${file}: key "${key}" ${what}`));
  };
  const name = doc.name;
  if (typeof name !== 'string' || !TASK_NAME.test(name)) bad('name', 'must be lowercase letters, digits, - or _');
  if (path.basename(file).replace(/\.ya?ml$/, '') !== name) bad('name', `must match the file name (${path.basename(file)})`);
  const version = doc.version;
  if (typeof version !== 'number' || !Number.isInteger(version) || version < 1) bad('version', 'must be a positive integer');
  const format = doc.format;
  const info = typeof format === 'string' ? formatInfo(format) : undefined;
  if (!info) bad('format', `must be one of ${[...Object.keys(RAW_FORMATS), ...Object.keys(BROWN_GENERATORS)].join(', ')}`);
  const delimiter = doc.delimiter;
  if (typeof delimiter !== 'string') bad('delimiter', 'must be a string (quote it: " ")');
  const metrics = doc.metrics;
  if (!Array.isArray(metrics) || metrics.length === 0) bad('metrics', 'must be a non-empty list');
  for (const metric of metrics as unknown[]) {
    if (typeof metric !== 'string' || !(metric in METRICS)) bad('metrics', `has unknown metric ${JSON.stringify(metric)} (known: ${Object.keys(METRICS).join(', ')})`);
    if (!info!.metrics.includes(metric as MetricName)) bad('metrics', `has ${metric}, which format ${format} does not produce (it gives ${info!.metrics.join(', ')})`);
  }
  const fields = doc.fields ?? [];
  if (!Array.isArray(fields) || fields.some((f) => typeof f !== 'string')) bad('fields', 'must be a list of strings');
  const params = doc.params ?? {};
  if (typeof params !== 'object' || params === null || Array.isArray(params) || Object.values(params).some((v) => typeof v !== 'number')) {
    bad('params', 'must be a mapping of numbers');
  }
  for (const key of ['source', 'prompt'] as const) if (doc[key] !== undefined && typeof doc[key] !== 'string') bad(key, 'must be a string');
  return {
    name: name as string,
    version: version as number,
    format: format as string,
    kind: info!.kind,
    source: (doc.source as string | undefined) ?? '',
    fields: fields as string[],
    prompt: (doc.prompt as string | undefined) ?? '',
    delimiter: delimiter as string,
    metrics: metrics as MetricName[],
    params: params as Record<string, number>,
    file,
  };
}

/** Every task YAML in `tasksDir`, by name. */
export function listTaskDefinitions(tasksDir = DEFAULT_TASKS_DIR): TaskDefinition[] {
  return fs
    .readdirSync(tasksDir)
    .filter((f) => /\.ya?ml$/.test(f))
    .sort()
    .map((f) => readTaskDefinition(path.join(tasksDir, f)));
}

export function taskDefinition(name: string, tasksDir = DEFAULT_TASKS_DIR): TaskDefinition {
  for (const ext of ['.yaml', '.yml']) {
    const file = path.join(tasksDir, name + ext);
    if (fs.existsSync(file)) return readTaskDefinition(file);
  }
  const known = listTaskDefinitions(tasksDir).map((d) => d.name);
  throw new UserError(`unknown eval task "${printable(name)}" (known: ${known.join(', ')})`);
}

/** Which task to run and, for tasks read from a public release, where its data is. */
export interface TaskSpec {
  name: string;
  file?: string;
  /** PIQA's separate labels file; found next to the data as NAME-labels.lst when not given. */
  labelsFile?: string;
}

/** `name`, `name=DATA.jsonl`, or `name=DATA.jsonl,LABELS.lst` (the form of eval.tasks entries and --task flags). */
export function parseTaskSpec(spec: string): TaskSpec {
  const equals = spec.indexOf('=');
  if (equals < 0) return { name: spec.trim() };
  const name = spec.slice(0, equals).trim();
  const [file, labelsFile, ...rest] = spec.slice(equals + 1).split(',');
  if (!name || !file || rest.length > 0) throw new UserError(`eval task "${printable(spec)}": expected NAME, NAME=DATA_FILE or NAME=DATA_FILE,LABELS_FILE`);
  return labelsFile ? { name, file, labelsFile } : { name, file };
}

export interface LoadTaskOptions {
  /** Keep the first `limit` items (0 or undefined: all). */
  limit?: number;
  /** The run's document split; the built-in Brown tasks draw from its test documents. */
  brownSplit?: BrownSplitOptions;
  tasksDir?: string;
}

/** A task ready to evaluate. */
export interface EvalTask {
  definition: TaskDefinition;
  items: TaskItem[];
  /** Where the items came from, for the results. */
  source: string;
}

export function checkLimit(limit: number | undefined): void {
  if (limit !== undefined && (!Number.isInteger(limit) || limit < 0)) throw new UserError(`eval.limit must be a non-negative integer (0: all items), got ${printable(String(limit))}`);
}

/** Load one task's items; malformed data throws a UserError naming the file and line, before anything is scored. */
export function loadTask(spec: TaskSpec | string, opts: LoadTaskOptions = {}): EvalTask {
  const taskSpec = typeof spec === 'string' ? parseTaskSpec(spec) : spec;
  checkLimit(opts.limit);
  const definition = taskDefinition(taskSpec.name, opts.tasksDir);
  const generator = BROWN_GENERATORS[definition.format];
  if (generator) {
    if (taskSpec.file) throw new UserError(`eval task ${definition.name} is built in and takes no data file (${printable(taskSpec.file)})`);
    if (!opts.brownSplit) throw new UserError(`eval task ${definition.name} needs the run's data split (data.seed, data.val_fraction, data.test_fraction)`);
    const items = generator.generate(definition, opts.brownSplit);
    const split = opts.brownSplit;
    return {
      definition,
      items: opts.limit ? items.slice(0, opts.limit) : items,
      source: `brown test documents (seed ${split.seed}, val ${split.valFraction}, test ${split.testFraction})`,
    };
  }
  const format = RAW_FORMATS[definition.format];
  if (!taskSpec.file) throw new UserError(`eval task ${definition.name} reads a data file: give it as ${definition.name}=PATH.jsonl`);
  const labelsFile = taskSpec.labelsFile ?? (format.acceptsLabelsFile ? siblingLabelsFile(taskSpec.file) : undefined);
  const items = readRawTask(format, taskSpec.file, { limit: opts.limit, labelsFile });
  return { definition, items, source: labelsFile ? `${taskSpec.file} (labels ${labelsFile})` : taskSpec.file };
}
