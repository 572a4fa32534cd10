// Raw-record parsers, one per public release format. Each turns one JSON record into a task item; the task's
// YAML (configs/tasks/) names the format, the delimiter put between context and choice, and the metrics.
// Every error names the file and line of the record; text quoted from a file is escaped for the terminal.

import * as fs from 'fs';
import * as path from 'path';
import { printable, UserError } from '../errors';
import type { MetricName, MultipleChoiceItem, PartialItem, TargetItem, TaskItem } from './types';

/** Where a record came from, for error messages: `file:line`. */
export interface RecordLocation {
  file: string;
  line: number;
}

function at(where: RecordLocation): string {
  return `${printable(where.file)}:${where.line}`;
}

type JsonObject = Record<string, unknown>;

function isObject(value: unknown): value is JsonObject {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function field(record: JsonObject, key: string, where: RecordLocation): unknown {
  if (!(key in record) || record[key] === null || record[key] === undefined) throw new UserError(`${at(where)}: missing field "${key}"`);
  return record[key];
}

function stringField(record: JsonObject, key: string, where: RecordLocation): string {
  const value = field(record, key, where);
  if (typeof value !== 'string') throw new UserError(`${at(where)}: field "${key}" must be a string`);
  return value;
}

function stringArrayField(record: JsonObject, key: string, where: RecordLocation): string[] {
  const value = field(record, key, where);
  if (!Array.isArray(value) || value.length < 2 || value.some((v) => typeof v !== 'string')) {
    throw new UserError(`${at(where)}: field "${key}" must be a list of at least two strings`);
  }
  return value as string[];
}

/** A label given as an integer or a string of digits, checked against the number of choices. */
function labelIndex(value: unknown, nChoices: number, key: string, where: RecordLocation, base = 0): number {
  const parsed = typeof value === 'number' ? value : typeof value === 'string' && /^\s*\d+\s*$/.test(value) ? Number(value) : NaN;
  const index = parsed - base;
  if (!Number.isInteger(index) || index < 0 || index >= nChoices) {
    throw new UserError(`${at(where)}: field "${key}" = ${printable(JSON.stringify(value))} is not a label in ${base}..${nChoices - 1 + base}`);
  }
  return index;
}

/** Python's str.capitalize (first character upper, the rest lower), which lm-evaluation-harness applies to ctx_b. */
export function pythonCapitalize(text: string): string {
  const chars = Array.from(text);
  if (chars.length === 0) return text;
  return chars[0].toUpperCase() + chars.slice(1).join('').toLowerCase();
}

/** HellaSwag's clean-up of WikiHow artefacts: " [title]" marks a heading, other [tags] are markup. */
export function cleanHellaswagText(text: string): string {
  return text
    .trim()
    .replace(/ \[title\]/g, '. ')
    .replace(/\[.*?\]/g, '')
    .replace(/ {2}/g, ' ');
}

export type RecordParser = (record: JsonObject, where: RecordLocation, extra: { label?: number }) => TaskItem;

export interface RawFormat {
  name: string;
  kind: TaskItem['kind'];
  /** Raw fields a record of this format carries (documentation; the parser checks what it needs). */
  fields: string[];
  metrics: MetricName[];
  /** PIQA keeps its labels in a separate file of one integer per line. */
  acceptsLabelsFile: boolean;
  parse: RecordParser;
}

const CHOICE_METRICS: MetricName[] = ['acc', 'acc_norm', 'acc_bytes'];

function hellaswag(record: JsonObject, where: RecordLocation): MultipleChoiceItem {
  const activity = stringField(record, 'activity_label', where);
  const ctxA = stringField(record, 'ctx_a', where);
  const ctxB = stringField(record, 'ctx_b', where);
  const endings = stringArrayField(record, 'endings', where);
  const gold = labelIndex(field(record, 'label', where), endings.length, 'label', where);
  return {
    kind: 'multiple_choice',
    context: cleanHellaswagText(`${activity}: ${ctxA} ${pythonCapitalize(ctxB)}`),
    choices: endings.map(cleanHellaswagText),
    gold,
  };
}

/** ARC answer keys are letters (A-E) in most items and digits (1-5) in some; a key of one kind may meet labels of the other. */
function arcGold(answerKey: string, labels: string[], where: RecordLocation): number {
  const exact = labels.indexOf(answerKey);
  if (exact >= 0) return exact;
  let translated: string | undefined;
  if (/^[1-9]$/.test(answerKey)) translated = String.fromCharCode('A'.charCodeAt(0) + Number(answerKey) - 1);
  else if (/^[A-I]$/.test(answerKey)) translated = String(answerKey.charCodeAt(0) - 'A'.charCodeAt(0) + 1);
  const index = translated === undefined ? -1 : labels.indexOf(translated);
  if (index < 0) {
    throw new UserError(`${at(where)}: field "answerKey" = ${printable(JSON.stringify(answerKey))} is not one of the choice labels ${printable(labels.join(','))}`);
  }
  return index;
}

function arc(record: JsonObject, where: RecordLocation): MultipleChoiceItem {
  const question = field(record, 'question', where);
  let stem: string;
  let texts: string[];
  let labels: string[];
  if (isObject(question)) {
    // The AI2 release: {"question": {"stem", "choices": [{"text", "label"}]}, "answerKey"}
    stem = stringField(question, 'stem', where);
    const choices = field(question, 'choices', where);
    if (!Array.isArray(choices) || choices.length < 2 || !choices.every((c) => isObject(c) && typeof c.text === 'string' && (typeof c.label === 'string' || typeof c.label === 'number'))) {
      throw new UserError(`${at(where)}: field "question.choices" must be a list of at least two {text, label}`);
    }
    texts = choices.map((c) => (c as JsonObject).text as string);
    labels = choices.map((c) => String((c as JsonObject).label));
  } else if (typeof question === 'string') {
    // The flattened (Hugging Face) form: {"question", "choices": {"text": [...], "label": [...]}, "answerKey"}
    stem = question;
    const choices = field(record, 'choices', where);
    if (!isObject(choices)) throw new UserError(`${at(where)}: field "choices" must be an object {text: [], label: []}`);
    texts = stringArrayField(choices, 'text', where);
    const rawLabels = field(choices, 'label', where);
    if (!Array.isArray(rawLabels) || rawLabels.length !== texts.length) {
      throw new UserError(`${at(where)}: field "choices.label" must list one label per choice text`);
    }
    labels = rawLabels.map(String);
  } else {
    throw new UserError(`${at(where)}: field "question" must be a string or an object with "stem" and "choices"`);
  }
  const answerKey = field(record, 'answerKey', where);
  if (typeof answerKey !== 'string' && typeof answerKey !== 'number') throw new UserError(`${at(where)}: field "answerKey" must be a string`);
  return {
    kind: 'multiple_choice',
    context: `Question: ${stem}\nAnswer:`,
    choices: texts,
    gold: arcGold(String(answerKey).trim(), labels, where),
  };
}

function piqa(record: JsonObject, where: RecordLocation, extra: { label?: number }): MultipleChoiceItem {
  const goal = stringField(record, 'goal', where);
  const choices = [stringField(record, 'sol1', where), stringField(record, 'sol2', where)];
  let gold: number;
  if ('label' in record && record.label !== null) {
    gold = labelIndex(record.label, 2, 'label', where);
    if (extra.label !== undefined && extra.label !== gold) {
      throw new UserError(`${at(where)}: field "label" = ${gold} disagrees with the labels file (${extra.label})`);
    }
  } else if (extra.label !== undefined) {
    gold = extra.label;
  } else {
    throw new UserError(`${at(where)}: missing field "label" and no labels file (pass piqa=FILE.jsonl,LABELS.lst)`);
  }
  return { kind: 'multiple_choice', context: `Question: ${goal}\nAnswer:`, choices, gold };
}

function winogrande(record: JsonObject, where: RecordLocation): PartialItem {
  const sentence = stringField(record, 'sentence', where);
  const blank = sentence.indexOf('_');
  if (blank < 0) throw new UserError(`${at(where)}: field "sentence" has no "_" blank`);
  const options = [stringField(record, 'option1', where), stringField(record, 'option2', where)];
  const gold = labelIndex(field(record, 'answer', where), 2, 'answer', where, 1);
  return {
    kind: 'partial',
    contexts: options.map((option) => sentence.slice(0, blank) + option),
    continuation: sentence.slice(blank + 1).trim(),
    gold,
  };
}

function boolq(record: JsonObject, where: RecordLocation): MultipleChoiceItem {
  const passage = stringField(record, 'passage', where);
  const question = stringField(record, 'question', where);
  let gold: number;
  if (typeof record.answer === 'boolean') gold = record.answer ? 1 : 0;
  else if ('answer' in record && record.answer !== null) throw new UserError(`${at(where)}: field "answer" must be true or false`);
  else if ('label' in record && record.label !== null) gold = labelIndex(record.label, 2, 'label', where);
  else throw new UserError(`${at(where)}: missing field "answer" (or "label")`);
  return { kind: 'multiple_choice', context: `${passage}\nQuestion: ${question}?\nAnswer:`, choices: ['no', 'yes'], gold };
}

function lambada(record: JsonObject, where: RecordLocation): TargetItem {
  // Trimmed so a trailing newline in a record does not become part of the last word.
  const text = stringField(record, 'text', where).trim();
  const lastSpace = text.lastIndexOf(' ');
  if (lastSpace <= 0) throw new UserError(`${at(where)}: field "text" needs at least two words`);
  return { kind: 'target', context: text.slice(0, lastSpace), target: ' ' + text.slice(lastSpace + 1) };
}

export const RAW_FORMATS: Readonly<Record<string, RawFormat>> = {
  hellaswag: { name: 'hellaswag', kind: 'multiple_choice', fields: ['activity_label', 'ctx_a', 'ctx_b', 'endings', 'label'], metrics: CHOICE_METRICS, acceptsLabelsFile: false, parse: hellaswag },
  arc: { name: 'arc', kind: 'multiple_choice', fields: ['question', 'choices', 'answerKey'], metrics: CHOICE_METRICS, acceptsLabelsFile: false, parse: arc },
  piqa: { name: 'piqa', kind: 'multiple_choice', fields: ['goal', 'sol1', 'sol2', 'label'], metrics: CHOICE_METRICS, acceptsLabelsFile: true, parse: piqa },
  winogrande: { name: 'winogrande', kind: 'partial', fields: ['sentence', 'option1', 'option2', 'answer'], metrics: ['acc'], acceptsLabelsFile: false, parse: winogrande },
  boolq: { name: 'boolq', kind: 'multiple_choice', fields: ['passage', 'question', 'answer'], metrics: CHOICE_METRICS, acceptsLabelsFile: false, parse: boolq },
  lambada: { name: 'lambada', kind: 'target', fields: ['text'], metrics: ['acc', 'perplexity'], acceptsLabelsFile: false, parse: lambada },
};

function readText(file: string, what: string): string {
  try {
    return fs.readFileSync(file, 'utf8');
  } catch (err) {
    throw new UserError(`cannot read ${what} ${printable(file)}: ${printable((err as NodeJS.ErrnoException).code ?? (err as Error).message)}`);
  }
}

/** Non-blank lines with their 1-based line numbers. */
function numberedLines(text: string): { text: string; line: number }[] {
  return text
    .split('\n')
    .map((content, index) => ({ text: content.replace(/\r$/, ''), line: index + 1 }))
    .filter((l) => l.text.trim() !== '');
}

function counted(n: number, noun: string): string {
  return `${n} ${noun}${n === 1 ? '' : 's'}`;
}

/** Labels file (PIQA's `*-labels.lst`): one integer per line. */
export function readLabelsFile(file: string): { label: number; line: number }[] {
  return numberedLines(readText(file, 'labels file')).map(({ text, line }) => {
    if (!/^\s*-?\d+\s*$/.test(text)) throw new UserError(`${printable(file)}:${line}: not an integer label: ${printable(JSON.stringify(text.slice(0, 40)))}`);
    return { label: Number(text), line };
  });
}

/** `dir/valid.jsonl` → `dir/valid-labels.lst`, the naming of the PIQA release. */
export function siblingLabelsFile(dataFile: string): string | undefined {
  const candidate = path.join(path.dirname(dataFile), `${path.basename(dataFile).replace(/\.jsonl?$/, '')}-labels.lst`);
  return fs.existsSync(candidate) ? candidate : undefined;
}

/**
 * Parse a JSONL file of `format` records into items, stopping after `limit` items (0 or undefined: all).
 * Labels for PIQA come from each record's `label` or, line by line, from `labelsFile`.
 */
export function readRawTask(format: RawFormat, file: string, opts: { limit?: number; labelsFile?: string } = {}): TaskItem[] {
  const limit = opts.limit && opts.limit > 0 ? opts.limit : Infinity;
  const labelsName = opts.labelsFile === undefined ? undefined : printable(opts.labelsFile);
  const labels = opts.labelsFile === undefined ? undefined : readLabelsFile(opts.labelsFile);
  if (labels && !format.acceptsLabelsFile) throw new UserError(`task format ${format.name} takes no labels file (${labelsName})`);
  const items: TaskItem[] = [];
  const lines = numberedLines(readText(file, 'task data file'));
  // Labels pair with records by position, so a count that differs means a file of another split or release:
  // every label could be off by some records. Checked on the whole files, whatever the limit.
  if (labels && labels.length !== lines.length) {
    throw new UserError(`${labelsName}: ${counted(labels.length, 'label')} for the ${counted(lines.length, 'record')} of ${printable(file)} (one label per record, in order)`);
  }
  for (const [recordIndex, { text, line }] of lines.entries()) {
    if (items.length >= limit) break;
    const where = { file, line };
    let record: unknown;
    try {
      record = JSON.parse(text);
    } catch (err) {
      // JSON.parse quotes the record in its message.
      throw new UserError(`${at(where)}: not valid JSON (${printable((err as Error).message)})`);
    }
    if (!isObject(record)) throw new UserError(`${at(where)}: a record must be a JSON object`);
    let label: number | undefined;
    if (labels) {
      const entry = labels[recordIndex];
      // Only PIQA (two solutions) takes a labels file.
      if (entry.label !== 0 && entry.label !== 1) throw new UserError(`${labelsName}:${entry.line}: label ${entry.label} is not in 0..1`);
      label = entry.label;
    }
    items.push(format.parse(record, where, { label }));
  }
  if (items.length === 0) throw new UserError(`${printable(file)}: no records`);
  return items;
}
