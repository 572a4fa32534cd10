// Checks a merged configuration against the schema and the rules that tie keys together. Every failure is a
// one-line UserError that names the key path and, through `originOf`, where the offending value came from.

import * as os from 'os';
import { printable, UserError } from '../errors';
import { formatBytes, MAX_INT32, MAX_POSITIONS, ropeTableBytes } from './limits';
import { AnyLeafSpec, AnySpec, CONFIG_SCHEMA, Range } from './schema';
import { Config } from './types';

/** Where the value at a key path was written (`configs/models/demo.yaml:12`, `--set train.lr=1`), if known. */
export type OriginLookup = (keyPath: string) => string | undefined;

/**
 * A config error's message quotes keys, values and paths that came from files and flags; a terminal would act
 * on control bytes among them (clear the screen, retitle the window), so the whole line goes out escaped.
 */
export function configError(message: string): UserError {
  return new UserError(printable(message));
}

export function keyError(keyPath: string, detail: string, originOf: OriginLookup): UserError {
  const origin = originOf(keyPath);
  return configError(`config error at ${keyPath}: ${detail}${origin ? ` [${origin}]` : ''}`);
}

export function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Validates `value` as a complete Config and returns it typed (the same object, not a copy). */
export function validateConfig(value: unknown, originOf: OriginLookup): Config {
  checkSpec(value, CONFIG_SCHEMA as unknown as AnySpec, '', originOf);
  const config = value as Config;
  checkRelations(config, originOf);
  return config;
}

/**
 * Why `keyPath` does not name a value of the config (a leaf or a list), with the nearest key when it looks like a
 * typo; null when it does. For key paths given apart from a config file, such as a sweep's axes.
 */
export function keyPathProblem(keyPath: string): string | null {
  let spec = CONFIG_SCHEMA as unknown as AnySpec;
  let prefix = '';
  for (const segment of keyPath.split('.')) {
    if (spec.kind !== 'section') return `${prefix} is a value, not a section`;
    if (!Object.prototype.hasOwnProperty.call(spec.fields, segment)) {
      return `unknown config key (${suggestKey(segment, prefix, Object.keys(spec.fields))})`;
    }
    spec = spec.fields[segment];
    prefix = joinPath(prefix, segment);
  }
  if (spec.kind === 'section') return `a section, not a value (its keys: ${Object.keys(spec.fields).join(', ')})`;
  return null;
}

function checkSpec(value: unknown, spec: AnySpec, keyPath: string, originOf: OriginLookup): void {
  if (spec.kind === 'section') {
    if (!isPlainObject(value)) throw keyError(keyPath || '(top level)', `expected a mapping of keys, got ${describeValue(value)}`, originOf);
    const known = Object.keys(spec.fields);
    for (const key of Object.keys(value)) {
      if (!Object.prototype.hasOwnProperty.call(spec.fields, key)) {
        throw keyError(joinPath(keyPath, key), `unknown key (${suggestKey(key, keyPath, known)})`, originOf);
      }
    }
    for (const [key, child] of Object.entries(spec.fields)) {
      const childPath = joinPath(keyPath, key);
      if (!Object.prototype.hasOwnProperty.call(value, key)) {
        throw keyError(childPath, 'missing (configs/base.yaml must define every key)', originOf);
      }
      checkSpec(value[key], child, childPath, originOf);
    }
    return;
  }
  if (spec.kind === 'list') {
    if (!Array.isArray(value)) {
      const hint = typeof value === 'string' || typeof value === 'number' ? ` (write [${printable(String(value))}])` : '';
      throw keyError(keyPath, `expected a list, each item ${describeSpec(spec.of)}; got ${describeValue(value)}${hint}`, originOf);
    }
    value.forEach((item, index) => checkLeaf(item, spec.of, `${keyPath}[${index}]`, originOf));
    return;
  }
  checkLeaf(value, spec, keyPath, originOf);
}

function checkLeaf(value: unknown, spec: AnyLeafSpec, keyPath: string, originOf: OriginLookup): void {
  const fail = (extra = ''): never => {
    throw keyError(keyPath, `expected ${describeSpec(spec)}, got ${describeValue(value)}${extra}`, originOf);
  };
  switch (spec.kind) {
    case 'boolean':
      if (typeof value !== 'boolean') fail();
      return;
    case 'string':
      if (typeof value !== 'string') fail(typeof value === 'number' ? ' (quote it to make it a string)' : '');
      if (!spec.pattern.test(value as string)) fail();
      return;
    case 'enum': {
      if (typeof value !== 'string' || !spec.values.includes(value)) {
        const near = typeof value === 'string' ? closest(value, spec.values) : undefined;
        fail(near ? ` (did you mean ${near}?)` : '');
      }
      return;
    }
    case 'int':
      if (typeof value !== 'number' || !Number.isSafeInteger(value) || !inRange(value, spec.range)) fail();
      return;
    case 'number':
      if (typeof value !== 'number' || !Number.isFinite(value) || !inRange(value, spec.range)) fail();
      return;
  }
}

/** Integer sizes that become a tensor dimension (or a loop over one); model.vocab_size has its own message. */
const INT32_SIZE_KEYS = [
  'model.d_model', 'model.n_layers', 'model.n_heads', 'model.q_lora_rank', 'model.kv_lora_rank', 'model.qk_nope_head_dim',
  'model.qk_rope_head_dim', 'model.v_head_dim', 'model.d_ff', 'data.seq_len', 'train.batch_size', 'train.grad_accum', 'eval.batch_size',
];

/** Rules between keys, and single-key rules that the schema's ranges cannot express. */
function checkRelations(config: Config, originOf: OriginLookup): void {
  const { model, data, train } = config;
  const fail = (keyPath: string, detail: string): never => {
    throw keyError(keyPath, detail, originOf);
  };

  // Sizes past what can be built are refused here by name, before any command sizes a tensor from them.
  if (model.vocab_size > MAX_INT32) fail('model.vocab_size', `${model.vocab_size} is beyond 2^31 - 1 (token ids are int32)`);
  for (const keyPath of INT32_SIZE_KEYS) {
    const value = keyPath.split('.').reduce<unknown>((node, key) => (node as Record<string, unknown>)[key], config) as number;
    if (value > MAX_INT32) fail(keyPath, `${value} is beyond 2^31 - 1 (tensor dimensions are int32)`);
  }
  if (model.max_seq_len > MAX_POSITIONS) {
    fail('model.max_seq_len', `${model.max_seq_len} positions are beyond the limit of ${MAX_POSITIONS} (2^24; see configs/base.yaml)`);
  }
  // Every command that builds a model builds these tables first, whatever it then runs.
  const ropeBytes = ropeTableBytes(model.max_seq_len, model.qk_nope_head_dim, model.qk_rope_head_dim);
  if (ropeBytes > os.totalmem()) {
    fail(
      'model.max_seq_len',
      `RoPE tables of ${model.max_seq_len} positions x ${model.qk_rope_head_dim} rotary features need about ${formatBytes(ropeBytes)}, more than this machine's memory (${formatBytes(os.totalmem())})`,
    );
  }

  if (model.qk_rope_head_dim % 2 !== 0) {
    fail('model.qk_rope_head_dim', `must be even (RoPE rotates pairs), got ${model.qk_rope_head_dim}`);
  }
  const groups = model.qk_norm.key_groups;
  if (groups !== 0 && model.n_heads % groups !== 0) {
    fail('model.qk_norm.key_groups', `must divide model.n_heads (${model.n_heads}) or be 0, got ${groups}`);
  }
  if (data.val_fraction + data.test_fraction >= 1) {
    fail('data.test_fraction', `data.val_fraction + data.test_fraction must be < 1 to leave training data, got ${data.val_fraction} + ${data.test_fraction}`);
  }
  if (data.seq_len > model.max_seq_len) {
    fail('data.seq_len', `${data.seq_len} exceeds model.max_seq_len (${model.max_seq_len})`);
  }
  if (train.warmup_tokens > train.tokens) {
    fail('train.warmup_tokens', `${train.warmup_tokens} exceeds train.tokens (${train.tokens})`);
  }
  const tokensPerStep = train.batch_size * train.grad_accum * data.seq_len;
  if (train.tokens < tokensPerStep) {
    fail('train.tokens', `${train.tokens} is less than one optimizer step (batch_size x grad_accum x data.seq_len = ${tokensPerStep} tokens)`);
  }
}

function inRange(value: number, range: Range): boolean {
  if (range.min !== undefined && (range.minOpen ? value <= range.min : value < range.min)) return false;
  if (range.max !== undefined && (range.maxOpen ? value >= range.max : value > range.max)) return false;
  return true;
}

export function describeSpec(spec: AnyLeafSpec): string {
  switch (spec.kind) {
    case 'boolean': return 'true or false';
    case 'string': return spec.expected;
    case 'enum': return `one of ${spec.values.join('|')}`;
    case 'int': return describeRange(spec.range, 'integer');
    case 'number': return describeRange(spec.range, 'number');
  }
}

function describeRange({ min, max, minOpen, maxOpen }: Range, noun: 'integer' | 'number'): string {
  const article = noun === 'integer' ? 'an' : 'a';
  if (max === undefined) {
    if (min === undefined) return `${article} ${noun}`;
    if (min === 0) return minOpen ? `a positive ${noun}` : `a non-negative ${noun}`;
    if (min === 1 && !minOpen && noun === 'integer') return 'a positive integer';
  }
  const low = min === undefined ? '(-inf' : `${minOpen ? '(' : '['}${min}`;
  const high = max === undefined ? 'inf)' : `${max}${maxOpen ? ')' : ']'}`;
  return `${article} ${noun} in ${low}, ${high}`;
}

/**
 * A value as it appears in a message: strings quoted and escaped so the message stays on one line (JSON escapes
 * the C0 controls; printable the DEL and C1 controls JSON leaves as they are).
 */
export function describeValue(value: unknown): string {
  if (value === null || value === undefined) return 'an empty value';
  if (Array.isArray(value)) return printable(`a list [${value.map(formatItem).join(', ')}]`);
  if (isPlainObject(value)) return 'a mapping';
  return printable(`${typeof value} ${formatItem(value)}`);
}

/** What kind of value, without the value: for text that may not be echoed (a file that is not a config). */
export function describeKind(value: unknown): string {
  if (value === null || value === undefined) return 'an empty value';
  if (Array.isArray(value)) return 'a list';
  if (isPlainObject(value)) return 'a mapping';
  return typeof value === 'boolean' ? 'a boolean' : `a ${typeof value}`;
}

function formatItem(value: unknown): string {
  if (typeof value === 'string') {
    const quoted = JSON.stringify(value);
    return quoted.length > 60 ? `${quoted.slice(0, 57)}..."` : quoted;
  }
  if (Array.isArray(value)) return '[...]';
  if (isPlainObject(value)) return '{...}';
  return String(value);
}

function joinPath(prefix: string, key: string): string {
  return prefix ? `${prefix}.${key}` : key;
}

/**
 * The hint for an unknown key: the nearest key at the same level when it is a plausible typo, else a key of the
 * same name elsewhere in the schema (a right key in the wrong section), else the list of keys at this level.
 */
function suggestKey(key: string, sectionPath: string, known: readonly string[]): string {
  const near = closest(key, known);
  if (near) return `did you mean ${joinPath(sectionPath, near)}?`;
  const elsewhere = allKeyPaths(CONFIG_SCHEMA as unknown as AnySpec, '').filter((p) => p.split('.').pop() === key);
  if (elsewhere.length > 0) return `did you mean ${elsewhere.join(' or ')}?`;
  return `known keys${sectionPath ? ` in ${sectionPath}` : ''}: ${known.join(', ')}`;
}

function allKeyPaths(spec: AnySpec, prefix: string): string[] {
  if (spec.kind !== 'section') return [];
  return Object.entries(spec.fields).flatMap(([key, child]) => {
    const keyPath = joinPath(prefix, key);
    return [keyPath, ...allKeyPaths(child, keyPath)];
  });
}

/** The candidate nearest to `word` by edit distance, if close enough to be a typo (about a third of its length). */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const allowed = Math.max(1, Math.floor(word.length / 3));
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    const distance = editDistance(word.toLowerCase(), candidate.toLowerCase());
    if (distance < bestDistance) {
      best = candidate;
      bestDistance = distance;
    }
  }
  return bestDistance <= allowed ? best : undefined;
}

/**
 * Edit distance counting insertions, deletions, substitutions and swaps of adjacent characters as one edit each
 * (optimal string alignment): a swapped pair (`tua` for `tau`) is the commonest typo in a key name.
 */
export function editDistance(a: string, b: string): number {
  // d[i][j]: distance between the first i characters of a and the first j of b.
  const d = Array.from({ length: a.length + 1 }, (_, i) => Array.from({ length: b.length + 1 }, (_, j) => (i === 0 ? j : j === 0 ? i : 0)));
  for (let i = 1; i <= a.length; i++) {
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      d[i][j] = Math.min(d[i - 1][j] + 1, d[i][j - 1] + 1, d[i - 1][j - 1] + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) d[i][j] = Math.min(d[i][j], d[i - 2][j - 2] + 1);
    }
  }
  return d[a.length][b.length];
}
