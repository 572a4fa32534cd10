// Reading run folders and experiment folders into LoadedRun records. Every problem with a file becomes a
// one-line UserError naming the file (and line, for the line-based formats) and the offending key.
import * as fs from 'fs';
import * as path from 'path';
import { parse as parseYaml } from 'yaml';
import type { Config } from '../config/types';
import { UserError } from '../errors';
import {
  RUN_STATUSES, type EvalPoint, type EvalResultsFile, type EvalTaskEntry, type ExperimentFile, type HeadMaxLogit,
  type LoadedRun, type MetricsRow, type RunManifest, type RunStatus, type RunSummary,
} from './types';

type Json = Record<string, unknown>;

function isObject(value: unknown): value is Json {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function readText(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch {
    throw new UserError(`cannot read ${file}`);
  }
}

function readJsonObject(file: string): Json {
  let parsed: unknown;
  try {
    parsed = JSON.parse(readText(file));
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw new UserError(`${file}: invalid JSON (${(err as Error).message})`);
  }
  if (!isObject(parsed)) throw new UserError(`${file}: expected a JSON object`);
  return parsed;
}

/** Field readers: `where` is "file" or "file:line", so the message points at the exact record. */
function requireNumber(obj: Json, key: string, where: string): number {
  const value = obj[key];
  if (typeof value !== 'number' || !Number.isFinite(value)) throw new UserError(`${where}: key \`${key}\` must be a finite number`);
  return value;
}

function optionalNumber(obj: Json, key: string, where: string): number | null {
  const value = obj[key];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'number') throw new UserError(`${where}: key \`${key}\` must be a number or null`);
  // NaN/Infinity cannot come from JSON, but a loss that blew up is better shown as missing than as a number.
  return Number.isFinite(value) ? value : null;
}

function optionalString(obj: Json, key: string, where: string): string | null {
  const value = obj[key];
  if (value === undefined || value === null) return null;
  if (typeof value !== 'string') throw new UserError(`${where}: key \`${key}\` must be a string`);
  return value;
}

function requireString(obj: Json, key: string, where: string): string {
  const value = optionalString(obj, key, where);
  if (value === null) throw new UserError(`${where}: missing key \`${key}\``);
  return value;
}

function readConfig(dir: string): Config {
  const file = path.join(dir, 'config.resolved.yaml');
  let parsed: unknown;
  try {
    parsed = parseYaml(readText(file));
  } catch (err) {
    if (err instanceof UserError) throw err;
    throw new UserError(`${file}: invalid YAML (${(err as Error).message.split('\n')[0]})`);
  }
  if (!isObject(parsed)) throw new UserError(`${file}: expected a mapping`);
  // Only the keys compare reads are checked here; the config module validates the rest when the run is made.
  const model = parsed.model, train = parsed.train;
  if (!isObject(model) || typeof model.variant !== 'string') throw new UserError(`${file}: missing key \`model.variant\``);
  if (!isObject(train) || typeof train.lr !== 'number') throw new UserError(`${file}: key \`train.lr\` must be a number`);
  const qkClip = train.qk_clip;
  if (!isObject(qkClip) || typeof qkClip.tau !== 'number') throw new UserError(`${file}: key \`train.qk_clip.tau\` must be a number`);
  return parsed as unknown as Config;
}

function readManifest(dir: string): RunManifest {
  const file = path.join(dir, 'manifest.json');
  const obj = readJsonObject(file);
  for (const key of ['tokenizer_hash', 'val_hash']) requireString(obj, key, file);
  return obj as unknown as RunManifest;
}

function parseSummary(obj: Json, file: string): RunSummary {
  const status = obj.status;
  if (typeof status !== 'string' || !RUN_STATUSES.includes(status as RunStatus)) {
    throw new UserError(`${file}: key \`status\` must be one of ${RUN_STATUSES.join('|')}`);
  }
  return {
    status: status as RunStatus,
    arm: optionalString(obj, 'arm', file),
    experiment: optionalString(obj, 'experiment', file),
    variant: optionalString(obj, 'variant', file),
    seed: optionalNumber(obj, 'seed', file),
    lr: optionalNumber(obj, 'lr', file),
    step: requireNumber(obj, 'step', file),
    tokens: requireNumber(obj, 'tokens', file),
    final_train_loss: optionalNumber(obj, 'final_train_loss', file),
    final_val_loss: optionalNumber(obj, 'final_val_loss', file),
    best_val_loss: optionalNumber(obj, 'best_val_loss', file),
    diverged_at_step: optionalNumber(obj, 'diverged_at_step', file),
    heads_clipped_total: optionalNumber(obj, 'heads_clipped_total', file),
    total_steps: optionalNumber(obj, 'total_steps', file),
    max_logit_peak: optionalNumber(obj, 'max_logit_peak', file),
    tokens_per_s: optionalNumber(obj, 'tokens_per_s', file),
    elapsed_s: optionalNumber(obj, 'elapsed_s', file),
  };
}

/**
 * A run that has not reached its first checkpoint has no summary.json yet. Its status is inferred from the run
 * lock the trainer holds while it works (a lock left by a killed process reads as running too), and its
 * position from the last metrics line.
 */
function inferredSummary(dir: string, metrics: MetricsRow[]): RunSummary {
  const last = metrics[metrics.length - 1];
  return {
    status: fs.existsSync(path.join(dir, 'run.lock')) ? 'running' : 'interrupted',
    arm: null, experiment: null, variant: null, seed: null, lr: null,
    step: last?.step ?? 0,
    tokens: last?.tokens ?? 0,
    final_train_loss: null, final_val_loss: null, best_val_loss: null,
    diverged_at_step: null,
    heads_clipped_total: null,
    total_steps: null, max_logit_peak: null, tokens_per_s: null, elapsed_s: null,
  };
}

function parseMetricsRow(obj: Json, where: string): MetricsRow {
  const rawMaxLogit = obj.max_logit;
  let maxLogit: number[] = [];
  if (Array.isArray(rawMaxLogit)) {
    if (!rawMaxLogit.every((v) => v === null || typeof v === 'number')) throw new UserError(`${where}: key \`max_logit\` must be an array of numbers`);
    // A null entry (a NaN logit) makes that layer's value unknown, not zero.
    maxLogit = rawMaxLogit.map((v) => (typeof v === 'number' && Number.isFinite(v) ? v : NaN));
  } else if (rawMaxLogit !== undefined && rawMaxLogit !== null) {
    throw new UserError(`${where}: key \`max_logit\` must be an array of numbers`);
  }
  return {
    step: requireNumber(obj, 'step', where),
    tokens: requireNumber(obj, 'tokens', where),
    lr: optionalNumber(obj, 'lr', where),
    train_loss: optionalNumber(obj, 'train_loss', where),
    val_loss: optionalNumber(obj, 'val_loss', where),
    grad_norm: optionalNumber(obj, 'grad_norm', where),
    max_logit: maxLogit,
    heads_clipped: optionalNumber(obj, 'heads_clipped', where) ?? 0,
    tokens_per_s: optionalNumber(obj, 'tokens_per_s', where),
    elapsed_s: optionalNumber(obj, 'elapsed_s', where),
  };
}

function readMetrics(dir: string, status: RunStatus): MetricsRow[] {
  const file = path.join(dir, 'metrics.jsonl');
  const lines = readText(file).split('\n');
  const rows: MetricsRow[] = [];
  lines.forEach((line, index) => {
    if (line.trim() === '') return;
    const where = `${file}:${index + 1}`;
    let parsed: unknown;
    try {
      parsed = JSON.parse(line);
    } catch {
      // A run that is still being written (or was killed mid-write) may end in a partial line; skip only that one.
      const isLastLine = lines.slice(index + 1).every((rest) => rest.trim() === '');
      if (isLastLine && status !== 'completed') return;
      throw new UserError(`${where}: invalid JSON line`);
    }
    if (!isObject(parsed)) throw new UserError(`${where}: expected a JSON object`);
    rows.push(parseMetricsRow(parsed, where));
  });
  return rows;
}

/** Minimal CSV reader for the numeric files mlactl writes itself (no quoted fields with commas inside). */
function readCsv(file: string): { header: string[]; rows: { cells: string[]; line: number }[] } {
  const lines = readText(file).split('\n');
  const header = (lines[0] ?? '').trim().split(',').map((h) => h.trim());
  const rows: { cells: string[]; line: number }[] = [];
  for (let i = 1; i < lines.length; i++) {
    if (lines[i].trim() === '') continue;
    rows.push({ cells: lines[i].trim().split(',').map((c) => c.trim().replace(/^"(.*)"$/, '$1')), line: i + 1 });
  }
  return { header, rows };
}

function columnIndexes(file: string, header: string[], wanted: string[]): Record<string, number> {
  const indexes: Record<string, number> = {};
  for (const name of wanted) {
    const index = header.indexOf(name);
    if (index < 0) throw new UserError(`${file}: missing column \`${name}\``);
    indexes[name] = index;
  }
  return indexes;
}

function csvNumber(cell: string | undefined, file: string, line: number, column: string, allowEmpty: boolean): number | null {
  if (cell === undefined || cell === '' || cell === 'null' || cell === 'NaN') {
    if (allowEmpty) return null;
    throw new UserError(`${file}:${line}: column \`${column}\` is empty`);
  }
  const value = Number(cell);
  if (!Number.isFinite(value)) throw new UserError(`${file}:${line}: column \`${column}\` is not a number: ${cell}`);
  return value;
}

function readEvalByStep(dir: string): EvalPoint[] {
  const file = path.join(dir, 'eval', 'by-step.csv');
  if (!fs.existsSync(file)) return [];
  const { header, rows } = readCsv(file);
  const col = columnIndexes(file, header, ['step', 'tokens', 'task', 'metric', 'value', 'stderr']);
  return rows.map(({ cells, line }) => ({
    step: csvNumber(cells[col.step], file, line, 'step', false) as number,
    tokens: csvNumber(cells[col.tokens], file, line, 'tokens', false) as number,
    task: cells[col.task],
    metric: cells[col.metric],
    // Empty where the metric could not be computed (an empty task).
    value: csvNumber(cells[col.value], file, line, 'value', true),
    stderr: csvNumber(cells[col.stderr], file, line, 'stderr', true),
  }));
}

function readEvalResultsFile(dir: string): EvalResultsFile | null {
  const file = path.join(dir, 'eval', 'results.json');
  if (!fs.existsSync(file)) return null;
  const obj = readJsonObject(file);
  if (!isObject(obj.tasks)) throw new UserError(`${file}: key \`tasks\` must be an object`);
  const tasks: Record<string, EvalTaskEntry> = {};
  for (const [taskName, rawTask] of Object.entries(obj.tasks)) {
    const where = `${file} (tasks.${taskName})`;
    if (!isObject(rawTask) || !isObject(rawTask.metrics)) throw new UserError(`${where}: key \`metrics\` must be an object`);
    const metrics: EvalTaskEntry['metrics'] = {};
    for (const [metricName, rawMetric] of Object.entries(rawTask.metrics)) {
      const metricWhere = `${file} (tasks.${taskName}.metrics.${metricName})`;
      if (!isObject(rawMetric)) throw new UserError(`${metricWhere}: expected {value, stderr}`);
      metrics[metricName] = { value: optionalNumber(rawMetric, 'value', metricWhere), stderr: optionalNumber(rawMetric, 'stderr', metricWhere) };
    }
    const version = rawTask.version;
    tasks[taskName] = {
      version: typeof version === 'string' || typeof version === 'number' ? version : null,
      n: optionalNumber(rawTask, 'n', where),
      chance: optionalNumber(rawTask, 'chance', where),
      metrics,
    };
  }
  return { checkpoint_step: optionalNumber(obj, 'checkpoint_step', file), tokens: optionalNumber(obj, 'tokens', file), tasks };
}

function readHeadMaxLogits(dir: string): HeadMaxLogit[] | null {
  const file = path.join(dir, 'maxlogits.csv');
  if (!fs.existsSync(file)) return null;
  const { header, rows } = readCsv(file);
  const names = ['step', 'tokens', 'layer', 'head', 'max_logit'] as const;
  const col = columnIndexes(file, header, [...names]);
  const out: HeadMaxLogit[] = [];
  for (const { cells, line } of rows) {
    const maxLogit = csvNumber(cells[col.max_logit], file, line, 'max_logit', true);
    if (maxLogit === null) continue;
    out.push({
      step: csvNumber(cells[col.step], file, line, 'step', false) as number,
      tokens: csvNumber(cells[col.tokens], file, line, 'tokens', false) as number,
      layer: csvNumber(cells[col.layer], file, line, 'layer', false) as number,
      head: csvNumber(cells[col.head], file, line, 'head', false) as number,
      max_logit: maxLogit,
    });
  }
  return out;
}

/**
 * summary.json is authoritative, an explicit null included (a diverged run has no final loss). Only keys it
 * lacks altogether, as in a summary written before the run ended, are taken from the metrics log.
 */
function fillMissingFinals(summary: RunSummary, metrics: MetricsRow[], raw: Json): void {
  const finite = (values: (number | null)[]): number[] => values.filter((v): v is number => v !== null && Number.isFinite(v));
  const train = finite(metrics.map((m) => m.train_loss));
  const val = finite(metrics.map((m) => m.val_loss));
  if (!('final_train_loss' in raw)) summary.final_train_loss = train.length > 0 ? train[train.length - 1] : null;
  if (!('final_val_loss' in raw)) summary.final_val_loss = val.length > 0 ? val[val.length - 1] : null;
  if (!('best_val_loss' in raw)) summary.best_val_loss = val.length > 0 ? Math.min(...val) : null;
}

export function isExperimentDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'experiment.json'));
}

export function isRunDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'config.resolved.yaml')) || fs.existsSync(path.join(dir, 'summary.json'));
}

/** Load one run folder. `id` defaults to the folder name. */
export function loadRun(dir: string, id?: string, experimentDir: string | null = null): LoadedRun {
  const absolute = path.resolve(dir);
  if (!fs.existsSync(absolute) || !fs.statSync(absolute).isDirectory()) throw new UserError(`run folder not found: ${dir}`);
  for (const required of ['config.resolved.yaml', 'manifest.json', 'metrics.jsonl']) {
    if (!fs.existsSync(path.join(absolute, required))) throw new UserError(`${dir} is not a run folder: missing ${required}`);
  }
  const summaryFile = path.join(absolute, 'summary.json');
  const summaryInferred = !fs.existsSync(summaryFile);
  const rawSummary = summaryInferred ? null : readJsonObject(summaryFile);
  const writtenSummary = rawSummary ? parseSummary(rawSummary, summaryFile) : null;
  // The status decides whether a partial last metrics line is tolerated; a run without a summary is unfinished.
  const metrics = readMetrics(absolute, writtenSummary?.status ?? 'running');
  const summary = writtenSummary ?? inferredSummary(absolute, metrics);
  fillMissingFinals(summary, metrics, rawSummary ?? {});
  return {
    dir: absolute,
    id: id ?? path.basename(absolute),
    experimentDir,
    config: readConfig(absolute),
    manifest: readManifest(absolute),
    summary,
    summaryInferred,
    metrics,
    evalResults: readEvalResultsFile(absolute),
    evalByStep: readEvalByStep(absolute),
    headMaxLogits: readHeadMaxLogits(absolute),
  };
}

export function readExperiment(dir: string): ExperimentFile {
  const file = path.join(dir, 'experiment.json');
  const obj = readJsonObject(file);
  const name = requireString(obj, 'name', file);
  if (!Array.isArray(obj.arms) || obj.arms.length === 0) throw new UserError(`${file}: key \`arms\` must be a non-empty array`);
  const arms = obj.arms.map((arm, index) => {
    const where = `${file} (arms[${index}])`;
    if (!isObject(arm)) throw new UserError(`${where}: expected an object`);
    return {
      name: requireString(arm, 'name', where),
      dir: requireString(arm, 'dir', where),
      variant: optionalString(arm, 'variant', where) ?? '',
      seed: optionalNumber(arm, 'seed', where) ?? 0,
      lr: optionalNumber(arm, 'lr', where) ?? 0,
    };
  });
  return { name, arms };
}

export interface LoadedInputs {
  runs: LoadedRun[];
  /** Experiment arms without a run folder yet (or whose start failed): `experiment/arm` names; likewise a sweep's runs. */
  notStarted: string[];
  /** True when the first input was an experiment or a folder of runs (decides the default output folder). */
  firstHoldsRuns: boolean;
}

/** An arm folder that is missing or holds no resolved config yet has not started training. */
function armStarted(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'config.resolved.yaml'));
}

/** How far below a folder of runs compare looks: a sweep's `runs/<id>/` is two levels down. */
export const RUN_SEARCH_DEPTH = 3;

function subfolders(dir: string): string[] {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(dir, { withFileTypes: true });
  } catch {
    throw new UserError(`cannot read folder ${dir}`);
  }
  return entries
    // Hidden folders are temporaries (`.step-N.partial`, `.tmp-…`) or tool state, never runs.
    .filter((e) => !e.name.startsWith('.'))
    .filter((e) => e.isDirectory() || (e.isSymbolicLink() && fs.statSync(path.join(dir, e.name), { throwIfNoEntry: false })?.isDirectory()))
    .map((e) => e.name)
    .sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
}

interface FoundFolders {
  runs: string[];
  experiments: string[];
}

/**
 * Run and experiment folders below `dir` (a sweep folder, `runs/`, any folder of runs), in name order. The walk
 * stops at each run or experiment folder and goes at most RUN_SEARCH_DEPTH levels down.
 */
export function findRunFolders(dir: string, depth = RUN_SEARCH_DEPTH, found: FoundFolders = { runs: [], experiments: [] }): FoundFolders {
  for (const name of subfolders(dir)) {
    const child = path.join(dir, name);
    if (isExperimentDir(child)) found.experiments.push(child);
    else if (isRunDir(child)) found.runs.push(child);
    else if (depth > 1) findRunFolders(child, depth - 1, found);
  }
  return found;
}

/** A sweep folder (one holding sweep.json) may have a folder in `runs/` for a run that has not started yet. */
function pendingSweepRuns(dir: string, found: FoundFolders): string[] {
  const runsDir = path.join(dir, 'runs');
  if (!fs.existsSync(path.join(dir, 'sweep.json')) || !fs.existsSync(runsDir)) return [];
  const loaded = [...found.runs, ...found.experiments];
  const holdsRun = (folder: string) => loaded.some((f) => f === folder || f.startsWith(folder + path.sep));
  return subfolders(runsDir).map((name) => path.join(runsDir, name)).filter((folder) => !holdsRun(folder));
}

function byVariantLrSeed(a: LoadedRun, b: LoadedRun): number {
  const seed = (r: LoadedRun) => (typeof r.config.seed === 'number' ? r.config.seed : 0);
  return a.config.model.variant.localeCompare(b.config.model.variant)
    || a.config.train.lr - b.config.train.lr
    || seed(a) - seed(b)
    || a.dir.localeCompare(b.dir, 'en', { numeric: true });
}

/**
 * Expand inputs (run folders, experiment folders, or folders of runs such as a sweep) into runs; the same folder
 * reached twice is loaded once. Arms of an experiment and runs of a sweep that have not started are reported, not
 * loaded: an experiment is compared while it runs.
 */
export function loadInputs(inputs: string[]): LoadedInputs {
  if (inputs.length === 0) throw new UserError('no run or experiment folder given');
  const runs: LoadedRun[] = [];
  const notStarted: string[] = [];
  const seen = new Set<string>();
  const add = (dir: string, id: string | undefined, experimentDir: string | null): void => {
    let key: string;
    try {
      key = fs.realpathSync(dir);
    } catch {
      throw new UserError(`run folder not found: ${dir}`);
    }
    if (seen.has(key)) return;
    seen.add(key);
    runs.push(loadRun(dir, id, experimentDir));
  };
  const addExperiment = (dir: string): void => {
    const experiment = readExperiment(dir);
    const before = runs.length;
    for (const arm of experiment.arms) {
      const armDir = path.join(dir, arm.dir);
      if (armStarted(armDir)) add(armDir, arm.name, path.resolve(dir));
      else notStarted.push(`${experiment.name}/${arm.name}`);
    }
    if (runs.length === before) {
      throw new UserError(`${dir}: none of the experiment's ${experiment.arms.length} arms has started (no config.resolved.yaml in their folders)`);
    }
  };
  let firstHoldsRuns = false;
  inputs.forEach((input, index) => {
    if (!fs.existsSync(input) || !fs.statSync(input).isDirectory()) throw new UserError(`folder not found: ${input}`);
    if (isExperimentDir(input)) {
      addExperiment(input);
      if (index === 0) firstHoldsRuns = true;
    } else if (isRunDir(input)) {
      add(input, undefined, null);
    } else {
      const found = findRunFolders(input);
      if (found.runs.length === 0 && found.experiments.length === 0) {
        throw new UserError(`${input} is neither a run folder (config.resolved.yaml, summary.json) nor an experiment folder (experiment.json), and no run folder was found below it`);
      }
      for (const experiment of found.experiments) addExperiment(experiment);
      const start = runs.length;
      for (const run of found.runs) add(run, undefined, null);
      // Folder names need not say what a run is; the tables read best by variant, then learning rate, then seed.
      runs.splice(start, runs.length - start, ...runs.slice(start).sort(byVariantLrSeed));
      for (const pending of pendingSweepRuns(input, found)) notStarted.push(`${path.basename(path.resolve(input))}/${path.relative(input, pending)}`);
      if (index === 0) firstHoldsRuns = true;
    }
  });
  makeIdsUnique(runs);
  return { runs, notStarted, firstHoldsRuns };
}

/** Two folders both called e.g. `qk-norm-s0` (from two experiments) get their parent folder as a prefix. */
function makeIdsUnique(runs: LoadedRun[]): void {
  const counts = new Map<string, number>();
  for (const run of runs) counts.set(run.id, (counts.get(run.id) ?? 0) + 1);
  for (const run of runs) {
    if ((counts.get(run.id) ?? 0) > 1) run.id = `${path.basename(run.experimentDir ?? path.dirname(run.dir))}/${run.id}`;
  }
  const seen = new Map<string, number>();
  for (const run of runs) {
    const n = seen.get(run.id) ?? 0;
    seen.set(run.id, n + 1);
    if (n > 0) run.id = `${run.id}#${n + 1}`;
  }
}
