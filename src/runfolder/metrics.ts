/**
 * Metrics files of a run: `metrics.jsonl` (full precision, the source of truth), `metrics.csv` (the same rows for
 * spreadsheets) and `maxlogits.csv` (per layer and head, at intervals). Rows are appended as they come; on resume
 * the files are cut back to the checkpoint's step so the resumed run writes exactly what a straight run would.
 */
import * as fs from 'fs';
import * as path from 'path';
import { UserError } from '../errors';
import type { MetricsRow } from './types';


// Numbers are written with JavaScript's shortest round-trip form, so reading them back gives the same doubles.
const csvValue = (v: unknown): string => (v === null || v === undefined ? '' : String(v));

export class MetricsWriter {
  private readonly jsonl: string;
  private readonly csv: string;
  private readonly maxCsv: string;

  constructor(readonly dir: string, private readonly layers: number) {
    this.jsonl = path.join(dir, 'metrics.jsonl');
    this.csv = path.join(dir, 'metrics.csv');
    this.maxCsv = path.join(dir, 'maxlogits.csv');
    if (!fs.existsSync(this.csv)) fs.writeFileSync(this.csv, this.csvHeader() + '\n');
    if (!fs.existsSync(this.maxCsv)) fs.writeFileSync(this.maxCsv, 'step,tokens,layer,head,max_logit\n');
    if (!fs.existsSync(this.jsonl)) fs.writeFileSync(this.jsonl, '');
  }

  private csvHeader(): string {
    const perLayer = Array.from({ length: this.layers }, (_, l) => `max_logit_l${l}`);
    return ['step', 'tokens', 'lr', 'train_loss', 'val_loss', 'grad_norm', ...perLayer, 'heads_clipped', 'tokens_per_s', 'elapsed_s', 'batch_hash'].join(',');
  }

  append(row: MetricsRow): void {
    fs.appendFileSync(this.jsonl, JSON.stringify(row) + '\n');
    const r = row;
    // One cell per layer whether or not the maxima were measured this step (empty when not), so every row has the
    // header's columns.
    const perLayer = Array.from({ length: this.layers }, (_, l) => r.max_logit[l] ?? null);
    const cells = [r.step, r.tokens, r.lr, r.train_loss, r.val_loss, r.grad_norm, ...perLayer, r.heads_clipped, r.tokens_per_s, r.elapsed_s, r.batch_hash];
    fs.appendFileSync(this.csv, cells.map(csvValue).join(',') + '\n');
  }

  appendHeads(step: number, tokens: number, heads: number[][]): void {
    const lines = heads.flatMap((row, l) => row.map((v, h) => `${step},${tokens},${l},${h},${v}`));
    fs.appendFileSync(this.maxCsv, lines.join('\n') + '\n');
  }

  /**
   * Drop rows after `step` (a resume from the checkpoint at `step` rewrites them), and a torn last line that a kill
   * or a full disk left behind. Returns the files that had a torn line.
   */
  truncateAfter(step: number): string[] {
    const torn: string[] = [];
    const keep = (file: string, rows: { step: number; line: string }[], header: string[], wasTorn: boolean) => {
      if (wasTorn) torn.push(file);
      const out = [...header, ...rows.filter((r) => r.step <= step).map((r) => r.line)];
      fs.writeFileSync(file, out.length ? out.join('\n') + '\n' : '');
    };
    const jsonl = parseJsonl(this.jsonl);
    keep(this.jsonl, jsonl.rows.map((r, i) => ({ step: r.step, line: jsonl.lines[i] })), [], jsonl.torn);
    for (const file of [this.csv, this.maxCsv]) {
      const csv = parseCsvRows(file);
      keep(file, csv.rows, csv.header, csv.torn);
    }
    return torn;
  }
}

/**
 * A metrics file is appended a line at a time, so only its last line can be torn (by SIGKILL or a full disk): that
 * line is dropped. A bad line anywhere else is damage no writer of ours leaves, and is refused by name.
 */
function splitLines(file: string): { lines: string[]; endsClean: boolean } {
  const text = fs.readFileSync(file, 'utf8');
  return { lines: text.split('\n').filter((l) => l.trim() !== ''), endsClean: text === '' || text.endsWith('\n') };
}

function parseJsonl(file: string): { rows: MetricsRow[]; lines: string[]; torn: boolean } {
  const { lines, endsClean } = splitLines(file);
  const rows: MetricsRow[] = [];
  for (let i = 0; i < lines.length; i++) {
    let row: MetricsRow | undefined;
    try {
      row = JSON.parse(lines[i]) as MetricsRow;
    } catch {
      row = undefined;
    }
    const valid = row !== undefined && typeof row === 'object' && row !== null && Number.isInteger(row.step);
    if (valid && !(i === lines.length - 1 && !endsClean)) {
      rows.push(row!);
      continue;
    }
    if (i === lines.length - 1) return { rows, lines: lines.slice(0, i), torn: true };
    throw new UserError(`${file}: line ${i + 1} is not a metrics row; the file is damaged`);
  }
  return { rows, lines, torn: false };
}

function parseCsvRows(file: string): { header: string[]; rows: { step: number; line: string }[]; torn: boolean } {
  const { lines, endsClean } = splitLines(file);
  if (lines.length === 0) return { header: [], rows: [], torn: false };
  const columns = lines[0].split(',').length;
  const rows: { step: number; line: string }[] = [];
  for (let i = 1; i < lines.length; i++) {
    const cells = lines[i].split(',');
    const valid = cells.length === columns && /^\d+$/.test(cells[0]) && !(i === lines.length - 1 && !endsClean);
    if (valid) rows.push({ step: Number(cells[0]), line: lines[i] });
    else if (i === lines.length - 1) return { header: [lines[0]], rows, torn: true };
    else throw new UserError(`${file}: line ${i + 1} has ${cells.length} cells where the header has ${columns}; the file is damaged`);
  }
  return { header: [lines[0]], rows, torn: false };
}

export function readMetrics(dir: string): MetricsRow[] {
  const file = path.join(dir, 'metrics.jsonl');
  if (!fs.existsSync(file)) return [];
  return parseJsonl(file).rows;
}
