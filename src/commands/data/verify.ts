import * as path from 'path';
import { Args } from '@oclif/core';
import { MlactlCommand } from '../../cli/base';
import { MANIFEST_FILE, readManifest, verifyShards } from '../../data/shards';

export interface DataVerifyResult {
  folder: string;
  shards: number;
  /** tokens per split, as the manifest counts them */
  tokens: Record<string, number>;
}

export default class DataVerify extends MlactlCommand<DataVerifyResult> {
  static override description = 'Check a shard folder against its manifest.json: every shard present and matching its sha256 (after a copy or an unpack)';

  static override examples = ['<%= config.bin %> data verify data/debian-corpus/shards'];

  static override args = {
    folder: Args.string({ description: 'a folder written by `data prepare` (or scripts/build-corpus.sh)', required: true }),
  };

  async run(): Promise<DataVerifyResult> {
    const { args } = await this.parse(DataVerify);
    const manifestPath = path.join(args.folder, MANIFEST_FILE);
    verifyShards(manifestPath);
    const manifest = readManifest(manifestPath);
    const tokens: Record<string, number> = {};
    for (const shard of manifest.shards) tokens[shard.split] = (tokens[shard.split] ?? 0) + shard.tokens;
    const counts = Object.entries(tokens).map(([split, n]) => `${split} ${n.toLocaleString('en-US')}`);
    this.say(`${args.folder}: ${manifest.shards.length} shard(s) match ${MANIFEST_FILE}; tokens ${counts.join(', ')}`);
    return { folder: args.folder, shards: manifest.shards.length, tokens };
  }
}
