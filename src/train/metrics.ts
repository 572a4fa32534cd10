/**
 * Metrics files of a run: `metrics.jsonl` (full precision, the source of truth), `metrics.csv` (the same rows for
 * spreadsheets) and `maxlogits.csv` (per layer and head, at intervals). Rows are appended as they come; on resume
 * the files are cut back to the checkpoint's step so the resumed run writes exactly what a straight run would.
 */
import * as fs from 'fs';
import * as path from 'path';

export interface MetricsRow {
  step: number;
  tokens: number;
  lr: number;
  train_loss: number;
  val_loss: number | null;
  grad_norm: number;
  /** Per layer, max over heads. */
  max_logit: number[];
  heads_clipped: number;
  tokens_per_s: number;
  elapsed_s: number;
  batch_hash: string;
}

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
    const cells = [r.step, r.tokens, r.lr, r.train_loss, r.val_loss, r.grad_norm, ...r.max_logit, r.heads_clipped, r.tokens_per_s, r.elapsed_s, r.batch_hash];
    fs.appendFileSync(this.csv, cells.map(csvValue).join(',') + '\n');
  }

  appendHeads(step: number, tokens: number, heads: number[][]): void {
    const lines = heads.flatMap((row, l) => row.map((v, h) => `${step},${tokens},${l},${h},${v}`));
    fs.appendFileSync(this.maxCsv, lines.join('\n') + '\n');
  }

  /** Drop rows after `step` (a resume from the checkpoint at `step` rewrites them). */
  truncateAfter(step: number): void {
    const keep = (file: string, header: boolean, stepOf: (line: string) => number) => {
      const lines = fs.readFileSync(file, 'utf8').split('\n').filter((l) => l !== '');
      const out = lines.filter((l, i) => (header && i === 0) || stepOf(l) <= step);
      fs.writeFileSync(file, out.length ? out.join('\n') + '\n' : '');
    };
    keep(this.jsonl, false, (l) => (JSON.parse(l) as MetricsRow).step);
    keep(this.csv, true, (l) => Number(l.split(',')[0]));
    keep(this.maxCsv, true, (l) => Number(l.split(',')[0]));
  }
}

export function readMetrics(dir: string): MetricsRow[] {
  const file = path.join(dir, 'metrics.jsonl');
  if (!fs.existsSync(file)) return [];
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => JSON.parse(l) as MetricsRow);
}
