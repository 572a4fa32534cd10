import * as fs from 'fs';
import * as path from 'path';
import { Args } from '@oclif/core';
import { MlactlCommand } from '../../cli/base';
import { writeDecodePlot } from '../../bench/decode-report';
import type { DecodeBenchResult } from '../../bench/decode';
import { UserError } from '../../errors';

export interface BenchPlotResult {
  dir: string;
  svg: string;
  png: string;
}

/** decode.json as `bench decode` wrote it; anything else is named by file and key, not drawn half-way. */
function readDecodeJson(file: string): DecodeBenchResult {
  let parsed: unknown;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (err) {
    const why = (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file (is this a bench decode folder?)' : (err as Error).message;
    throw new UserError(`${file}: ${why}`);
  }
  const r = parsed as Partial<DecodeBenchResult>;
  if (!Array.isArray(r.rows) || r.rows.length === 0) throw new UserError(`${file}: key "rows" must be a non-empty list of timed rows`);
  r.rows.forEach((row, i) => {
    for (const key of ['context', 'median_ms', 'p10_ms', 'p90_ms'] as const) {
      if (typeof row[key] !== 'number') throw new UserError(`${file}: key "rows[${i}].${key}" must be a number`);
    }
    if (typeof row.cache !== 'string') throw new UserError(`${file}: key "rows[${i}].cache" must be a cache name`);
  });
  if (!Array.isArray(r.ratios)) throw new UserError(`${file}: key "ratios" must be a list`);
  return r as DecodeBenchResult;
}

export default class BenchPlot extends MlactlCommand<BenchPlotResult> {
  static override description =
    'Draw decode.svg and decode.png for a bench decode folder from its decode.json (for results from a machine without the plotting packages, such as the GPU bundle)';

  static override examples = ['<%= config.bin %> bench plot results/gpu/decode-b1'];

  static override args = {
    dir: Args.string({ description: 'folder written by bench decode', required: true }),
  };

  async run(): Promise<BenchPlotResult> {
    const { args } = await this.parse(BenchPlot);
    const result = readDecodeJson(path.join(args.dir, 'decode.json'));
    const files = await writeDecodePlot(args.dir, result);
    this.say(`written: ${files.svg}, ${files.png}`);
    return { dir: args.dir, ...files };
  }
}
