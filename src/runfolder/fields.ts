/**
 * Reading the run folder's JSON files field by field (config.json, state.json): every refusal is one line naming
 * the file and the key, and values quoted in it are cut short.
 */
import { UserError } from '../errors';

export const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

export interface FieldReader {
  /** The root object, or a refusal when the file holds anything else. */
  root: Record<string, unknown>;
  fail(key: string, what: string): never;
  /** A value as a message shows it: JSON, at most 100 characters. */
  shown(v: unknown): string;
  /** `o[key]`, refused as missing when absent; `full` is the key's path as the message names it. */
  get(o: Record<string, unknown>, key: string, full?: string): unknown;
}

export function fieldReader(raw: unknown, source: string): FieldReader {
  const fail = (key: string, what: string): never => {
    throw new UserError(`${source}: ${key}: ${what}`);
  };
  const shown = (v: unknown): string => {
    const s = JSON.stringify(v) ?? String(v);
    return s.length > 100 ? `${s.slice(0, 100)}...` : s;
  };
  if (!isObject(raw)) throw new UserError(`${source}: not a JSON object, got ${shown(raw)}`);
  const get = (o: Record<string, unknown>, key: string, full = key): unknown => {
    const v = Object.prototype.hasOwnProperty.call(o, key) ? o[key] : undefined;
    return v === undefined ? fail(full, 'missing') : v;
  };
  return { root: raw, fail, shown, get };
}
