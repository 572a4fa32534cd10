// Reading configurations: a YAML file's `extends` chain is resolved down to configs/base.yaml, the layers are
// deep-merged (mappings merge key by key; lists and scalars replace), `--set key.path=value` overrides go on top,
// and the result is validated. Each key remembers the layer that last wrote it so that errors point there.

import * as fs from 'fs';
import * as path from 'path';
import { Document, isMap, isScalar, LineCounter, parseDocument, stringify, YAMLError } from 'yaml';
import { CONFIGS_DIR } from '../paths';
import { Config, ModelConfig } from './types';
import { configError, describeKind, describeValue, isPlainObject, keyError, OriginLookup, validateConfig } from './validate';

/** Resolved from src/config (tests) and dist/config (the built CLI) alike. */
export const BASE_CONFIG_PATH = path.join(CONFIGS_DIR, 'base.yaml');

/**
 * Config files are a few kilobytes; the bound keeps a mistaken path (a log, a data file) from being read whole.
 * Together with the extension and regular-file checks it stops `extends` from reading what is not a config.
 */
export const MAX_CONFIG_BYTES = 2 ** 20;
const CONFIG_EXTENSIONS = ['.yaml', '.yml'];

/** One source of keys, merged in order: base, the extends chain from root to leaf, then each `--set`. */
interface Layer {
  data: Record<string, unknown>;
  originOf: (keyPath: string) => string;
}

interface ConfigFile {
  display: string;
  data: Record<string, unknown>;
  /** Absolute path of the file named by `extends`, if any, and the path as written. */
  extendsPath?: string;
  extendsWritten?: string;
  lineOf: Map<string, number>;
}

/**
 * Reads a config file (relative to the working directory), resolving `extends`, then applies `sets` in order.
 * `setOrigins[i]`, when given, is where `sets[i]` was written (a sweep file's line) for error messages; by default
 * an override is reported as the `--set` flag it came from.
 */
export function loadConfig(file: string, sets: string[] = [], setOrigins: (string | undefined)[] = []): Config {
  const chain = readExtendsChain(file).map(fileLayer);
  return resolveLayers([fileLayer(readBaseFile()), ...chain, ...sets.map((arg, i) => setLayer(arg, setOrigins[i]))]);
}

/**
 * A YAML file that is not a config but sits beside them (a sweep file), read with the same guards (a regular
 * .yaml file, bounded size, UTF-8, errors by position without quoting the text): its top-level mapping and the
 * line of every key by dotted path. Such files name their config instead of extending one.
 */
export function readYamlMapping(file: string): { display: string; data: Record<string, unknown>; lineOf: Map<string, number> } {
  const read = readConfigFile(path.resolve(file));
  if (read.extendsPath !== undefined) {
    throw configError(`config error at extends: ${read.display} is not a config and cannot extend one [${read.display}:${read.lineOf.get('extends')}]`);
  }
  return { display: read.display, data: read.data, lineOf: read.lineOf };
}

/** As loadConfig for an in-memory object (an experiment arm, a test); `sourceName` labels its errors. */
export function resolveConfigObject(obj: unknown, sets: string[] = [], sourceName = 'config object'): Config {
  const data = obj === undefined || obj === null ? {} : obj;
  if (!isPlainObject(data)) {
    throw configError(`config error in ${sourceName}: expected a mapping of config keys, got ${describeValue(data)}`);
  }
  if (Object.prototype.hasOwnProperty.call(data, 'extends')) {
    throw configError(`config error at extends: only config files can extend another file [${sourceName}]`);
  }
  const layer: Layer = { data, originOf: () => sourceName };
  return resolveLayers([fileLayer(readBaseFile()), layer, ...sets.map((arg) => setLayer(arg))]);
}

export function baseConfig(): Config {
  return resolveLayers([fileLayer(readBaseFile())]);
}

export function configToYaml(cfg: Config): string {
  // lineWidth 0: never fold long strings (paths), so a saved config diffs line by line.
  return stringify(cfg, { lineWidth: 0 });
}

/**
 * Writes `value` at a dotted key path, creating the mappings on the way. Refuses to replace a non-mapping on the
 * way, which would silently drop what was there.
 */
export function setConfigValue(obj: Record<string, unknown>, keyPath: string, value: unknown): void {
  const segments = keyPath.split('.');
  if (segments.some((segment) => segment.trim() === '')) {
    throw configError(`config error at ${keyPath}: empty segment in key path`);
  }
  let node = obj;
  for (let i = 0; i < segments.length - 1; i++) {
    const segment = segments[i];
    if (!Object.prototype.hasOwnProperty.call(node, segment)) defineOwn(node, segment, {});
    const next = node[segment];
    if (!isPlainObject(next)) {
      throw configError(`config error at ${keyPath}: ${segments.slice(0, i + 1).join('.')} is ${describeValue(next)}, not a mapping`);
    }
    node = next;
  }
  defineOwn(node, segments[segments.length - 1], value);
}

/** The number of key groups G that QK-norm uses: 0 in the config means one group per head. */
export function effectiveKeyGroups(m: ModelConfig): number {
  return m.qk_norm.key_groups === 0 ? m.n_heads : m.qk_norm.key_groups;
}

/**
 * The embedding's row count: 0 takes the tokenizer's vocabulary rounded up to a multiple of 64 (matmul-friendly
 * shapes; the extra rows are never targets). A fixed size must hold every token id.
 */
export function effectiveVocab(m: ModelConfig, tokenizerVocab: number): number {
  if (!Number.isSafeInteger(tokenizerVocab) || tokenizerVocab <= 0) {
    throw new Error(`effectiveVocab: tokenizer vocabulary must be a positive integer, got ${tokenizerVocab}`);
  }
  if (m.vocab_size === 0) return Math.ceil(tokenizerVocab / 64) * 64;
  if (m.vocab_size < tokenizerVocab) {
    throw configError(
      `config error at model.vocab_size: ${m.vocab_size} is smaller than the tokenizer's vocabulary (${tokenizerVocab}); use 0 to size it from the tokenizer`,
    );
  }
  return m.vocab_size;
}

function resolveLayers(layers: Layer[]): Config {
  const merged: Record<string, unknown> = {};
  const origins = new Map<string, string>();
  for (const layer of layers) mergeInto(merged, layer.data, '', layer, origins);
  const originOf: OriginLookup = (keyPath) => {
    // A list item or a key inside a replaced value has no entry of its own: fall back to its parents.
    let p = keyPath;
    while (p !== '') {
      const origin = origins.get(p);
      if (origin !== undefined) return origin;
      const parent = p.replace(/(\[\d+\]|\.?[^.[]+)$/, '');
      if (parent === p) break;
      p = parent;
    }
    return undefined;
  };
  return validateConfig(merged, originOf);
}

function mergeInto(
  target: Record<string, unknown>,
  source: Record<string, unknown>,
  prefix: string,
  layer: Layer,
  origins: Map<string, string>,
): void {
  for (const [key, value] of Object.entries(source)) {
    const keyPath = prefix ? `${prefix}.${key}` : key;
    origins.set(keyPath, layer.originOf(keyPath));
    if (isPlainObject(value)) {
      const existing = Object.prototype.hasOwnProperty.call(target, key) ? target[key] : undefined;
      const section = isPlainObject(existing) ? existing : {};
      if (section !== existing) defineOwn(target, key, section);
      mergeInto(section, value, keyPath, layer, origins);
    } else {
      defineOwn(target, key, cloneData(value));
    }
  }
}

/** Copies lists (and mappings inside them) so the merged config never aliases a cached layer. */
function cloneData(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(cloneData);
  if (isPlainObject(value)) {
    const copy: Record<string, unknown> = {};
    for (const [key, item] of Object.entries(value)) defineOwn(copy, key, cloneData(item));
    return copy;
  }
  return value;
}

/** Plain assignment of `__proto__` would change the prototype instead of adding a key; the validator should see it. */
function defineOwn(target: Record<string, unknown>, key: string, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

function fileLayer(file: ConfigFile): Layer {
  return {
    data: file.data,
    originOf: (keyPath) => {
      const line = file.lineOf.get(keyPath);
      return line === undefined ? file.display : `${file.display}:${line}`;
    },
  };
}

function setLayer(arg: string, origin?: string): Layer {
  const source = origin ?? `--set ${arg}`;
  const eq = arg.indexOf('=');
  const keyPath = eq < 0 ? '' : arg.slice(0, eq).trim();
  if (!/^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/.test(keyPath)) {
    throw configError(`config error in ${source}: expected key.path=value, e.g. --set train.lr=3e-4`);
  }
  const doc = parseDocument(arg.slice(eq + 1));
  if (doc.errors.length > 0) {
    throw configError(`config error at ${keyPath}: invalid YAML value (${yamlErrorText(doc.errors[0])}) [${source}]`);
  }
  const data: Record<string, unknown> = {};
  setConfigValue(data, keyPath, doc.toJS());
  return { data, originOf: () => source };
}

let cachedBaseFile: ConfigFile | undefined;

function readBaseFile(): ConfigFile {
  if (!cachedBaseFile) {
    const file = readConfigFile(BASE_CONFIG_PATH);
    if (file.extendsPath !== undefined) {
      throw configError(`config error at extends: the base config cannot extend another file [${file.display}:${file.lineOf.get('extends')}]`);
    }
    cachedBaseFile = file;
  }
  return cachedBaseFile;
}

/** The files from the one named down to (not including) base.yaml, root first. */
function readExtendsChain(file: string): ConfigFile[] {
  const baseCanonical = canonicalPath(BASE_CONFIG_PATH);
  const chain: ConfigFile[] = [];
  const visited: string[] = [];
  let nextPath = path.resolve(file);
  let referrer: ConfigFile | undefined;
  for (;;) {
    const canonical = canonicalPath(nextPath);
    if (canonical === baseCanonical) break;
    if (referrer && visited.includes(canonical)) {
      const cycle = [...chain.map((f) => f.display), displayPath(nextPath)].join(' -> ');
      throw configError(`config error at extends: cycle ${cycle} [${referrer.display}:${referrer.lineOf.get('extends')}]`);
    }
    visited.push(canonical);
    const current: ConfigFile = readConfigFile(nextPath, referrer);
    chain.push(current);
    if (current.extendsPath === undefined) break;
    referrer = current;
    nextPath = current.extendsPath;
  }
  return chain.reverse();
}

function readConfigFile(absPath: string, referrer?: ConfigFile): ConfigFile {
  const display = displayPath(absPath);
  let text: string;
  try {
    text = readConfigText(absPath);
  } catch (err) {
    const reason = err instanceof ConfigReadError ? err.message : readFailure(err);
    if (referrer) {
      throw configError(
        `config error at extends: cannot read ${referrer.extendsWritten} (${reason}: ${display}) [${referrer.display}:${referrer.lineOf.get('extends')}]`,
      );
    }
    throw configError(`config error: cannot read config file ${display}: ${reason}`);
  }

  // From here on the text is a config file's, yet errors still give positions only: a message that quoted the
  // text would print whatever a mistaken path led to.
  const lineCounter = new LineCounter();
  const doc = parseDocument(text, { lineCounter });
  if (doc.errors.length > 0) {
    const error = doc.errors[0];
    const where = error.linePos ? `:${error.linePos[0].line}:${error.linePos[0].col}` : '';
    throw configError(`config error in ${display}${where}: invalid YAML: ${yamlErrorText(error)}`);
  }
  let parsed: unknown;
  try {
    parsed = doc.toJS();
  } catch (err) {
    throw configError(`config error in ${display}: invalid YAML: ${toJsFailure(err)}`);
  }
  const data = parsed === null || parsed === undefined ? {} : parsed;
  if (!isPlainObject(data)) {
    throw configError(`config error in ${display}: the top level must be a mapping of config keys, got ${describeKind(data)}`);
  }

  const lineOf = keyLines(doc, lineCounter);
  let extendsPath: string | undefined;
  let extendsWritten: string | undefined;
  if (Object.prototype.hasOwnProperty.call(data, 'extends')) {
    const target = data.extends;
    if (typeof target !== 'string' || target.trim() === '') {
      throw keyError('extends', `expected a path to another config file, got ${describeValue(target)}`, () => `${display}:${lineOf.get('extends')}`);
    }
    // Relative to the file's own folder, so a preset works from any working directory.
    extendsWritten = target;
    extendsPath = path.resolve(path.dirname(absPath), target);
    delete data.extends;
  }
  return { display, data, extendsPath, extendsWritten, lineOf };
}

/** The line of every mapping key in the document, by dotted key path. */
function keyLines(doc: Document, lineCounter: LineCounter): Map<string, number> {
  const lines = new Map<string, number>();
  const walk = (node: unknown, prefix: string): void => {
    if (!isMap(node)) return;
    for (const pair of node.items) {
      const key = isScalar(pair.key) ? String(pair.key.value) : String(pair.key);
      const keyPath = prefix ? `${prefix}.${key}` : key;
      const offset = isScalar(pair.key) && pair.key.range ? pair.key.range[0] : undefined;
      if (offset !== undefined) lines.set(keyPath, lineCounter.linePos(offset).line);
      walk(pair.value, keyPath);
    }
  };
  walk(doc.contents, '');
  return lines;
}

/** A reason for refusing a file before parsing it, worded for `cannot read FILE (reason)`. */
class ConfigReadError extends Error {}

/**
 * The text of a config file: a regular file named .yaml or .yml (the name it is reached by and the file the links
 * end at), at most MAX_CONFIG_BYTES, in UTF-8. Checked before reading, since reading is what goes wrong: a device
 * such as /dev/zero never ends, and opening a FIFO waits for a writer.
 */
function readConfigText(absPath: string): string {
  const kind = (st: fs.Stats): void => {
    if (st.isDirectory()) throw new ConfigReadError('is a directory');
    if (!st.isFile()) throw new ConfigReadError('not a regular file');
  };
  kind(fs.statSync(absPath));
  const isYamlName = (p: string) => CONFIG_EXTENSIONS.includes(path.extname(p).toLowerCase());
  if (!isYamlName(absPath) || !isYamlName(fs.realpathSync.native(absPath))) throw new ConfigReadError('not a .yaml or .yml file');
  const tooLarge = `larger than ${MAX_CONFIG_BYTES / 2 ** 20} MiB`;
  // Non-blocking, so a path swapped for a FIFO after the stat above cannot hang the open; fstat re-checks the kind.
  const fd = fs.openSync(absPath, fs.constants.O_RDONLY | (fs.constants.O_NONBLOCK ?? 0));
  try {
    const st = fs.fstatSync(fd);
    kind(st);
    if (st.size > MAX_CONFIG_BYTES) throw new ConfigReadError(tooLarge);
    // One byte past the bound tells a file that grew since the fstat from one that is exactly at it.
    const buffer = Buffer.alloc(MAX_CONFIG_BYTES + 1);
    let length = 0;
    for (;;) {
      const n = fs.readSync(fd, buffer, length, buffer.length - length, null);
      if (n === 0) break;
      length += n;
      if (length > MAX_CONFIG_BYTES) throw new ConfigReadError(tooLarge);
    }
    try {
      return new TextDecoder('utf-8', { fatal: true }).decode(buffer.subarray(0, length));
    } catch {
      throw new ConfigReadError('not UTF-8 text');
    }
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * What a YAML error is, in words of our own: the yaml package's messages quote the source (an unknown escape, a
 * directive, an anchor name), and a config error must never print file contents; the position says where.
 */
const YAML_ERRORS: Record<YAMLError['code'], string> = {
  ALIAS_PROPS: 'an alias cannot have an anchor or a tag',
  BAD_ALIAS: 'an invalid alias',
  BAD_COLLECTION_TYPE: 'a collection of the wrong kind',
  BAD_DIRECTIVE: 'an invalid directive',
  BAD_DQ_ESCAPE: 'invalid escape sequence in a double-quoted string',
  BAD_INDENT: 'bad indentation',
  BAD_PROP_ORDER: 'an anchor or tag in the wrong place',
  BAD_SCALAR_START: 'a plain value cannot start with this character',
  BLOCK_AS_IMPLICIT_KEY: 'a block collection cannot be a key',
  BLOCK_IN_FLOW: 'a block collection inside a flow collection',
  DUPLICATE_KEY: 'Map keys must be unique',
  IMPOSSIBLE: 'a structure the parser cannot read',
  KEY_OVER_1024_CHARS: 'a key longer than 1024 characters',
  MISSING_CHAR: 'a closing bracket or quote is missing',
  MULTILINE_IMPLICIT_KEY: 'a key cannot span several lines',
  MULTIPLE_ANCHORS: 'several anchors on one value',
  MULTIPLE_DOCS: 'several documents in one file',
  MULTIPLE_TAGS: 'several tags on one value',
  NON_STRING_KEY: 'a key that is not a string',
  RESOURCE_EXHAUSTION: 'too many aliases (a YAML bomb?)',
  TAB_AS_INDENT: 'a tab used as indentation',
  TAG_RESOLVE_FAILED: 'an unknown tag',
  UNEXPECTED_TOKEN: 'unexpected text',
};

function yamlErrorText(error: YAMLError): string {
  return YAML_ERRORS[error.code] ?? 'a syntax error';
}

/** Errors from resolving aliases, which the yaml package reports only when it builds the values. */
function toJsFailure(err: unknown): string {
  const message = err instanceof Error ? err.message : '';
  if (/^Excessive alias count/.test(message)) return YAML_ERRORS.RESOURCE_EXHAUSTION;
  if (/^Unresolved alias/.test(message)) return 'an alias names no anchor before it';
  return 'a document that cannot be read as data';
}

function readFailure(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EISDIR') return 'is a directory';
  if (code === 'EACCES') return 'permission denied';
  return code ?? (err as Error).message.split('\n')[0];
}

function displayPath(absPath: string): string {
  const relative = path.relative(process.cwd(), absPath);
  return relative !== '' && !relative.startsWith('..') && !path.isAbsolute(relative) ? relative : absPath;
}

function canonicalPath(p: string): string {
  try {
    return fs.realpathSync.native(p);
  } catch {
    return path.resolve(p);
  }
}
