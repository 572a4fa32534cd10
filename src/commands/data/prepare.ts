import { Flags } from '@oclif/core';
import { SingleBar } from 'cli-progress';
import { MlactlCommand } from '../../cli/base';
import { BASE_CONFIG_PATH, loadConfig } from '../../config/load';
import { prepareShards, type ShardManifest } from '../../data/shards';
import { getTokenizer } from '../../data/tokenizer';

export default class DataPrepare extends MlactlCommand<ShardManifest> {
  static override description = 'Tokenize a corpus into uint16/uint32 token shards with a manifest (token counts, tokenizer, hashes)';

  static override examples = [
    '<%= config.bin %> data prepare --source brown --tokenizer gpt2 --out data/brown-gpt2',
    '<%= config.bin %> data prepare --source corpus.jsonl --tokenizer gpt2 --out data/corpus --config configs/models/gpu-small.yaml',
  ];

  static override flags = {
    source: Flags.string({ description: 'brown, a .txt file or folder, or a .jsonl file with a `text` field', required: true }),
    out: Flags.string({ description: 'output folder (replaced atomically if it holds earlier shards)', required: true }),
    tokenizer: Flags.string({ description: 'byte | gpt2 (default: the config\'s data.tokenizer, else byte)' }),
    config: Flags.string({ description: 'take data.seed and the split fractions from this config (default: configs/base.yaml)' }),
    'shard-tokens': Flags.integer({ description: 'tokens per shard file', min: 1 }),
  };

  async run(): Promise<ShardManifest> {
    const { flags } = await this.parse(DataPrepare);
    const cfg = loadConfig(flags.config ?? BASE_CONFIG_PATH);
    const tokenizer = getTokenizer(flags.tokenizer ?? cfg.data.tokenizer);
    const bar = !this.jsonEnabled() && process.stderr.isTTY ? new SingleBar({ format: 'tokenizing [{bar}] {value}/{total} documents | ETA {eta_formatted}', stream: process.stderr }) : undefined;
    let started = false;
    const manifest = await prepareShards(flags.source, tokenizer, flags.out, {
      shardTokens: flags['shard-tokens'],
      seed: cfg.data.seed,
      valFraction: cfg.data.val_fraction,
      testFraction: cfg.data.test_fraction,
      onProgress: (done, total) => {
        if (!bar) return;
        if (!started) {
          bar.start(total, 0);
          started = true;
        }
        bar.update(done);
      },
    });
    bar?.stop();
    this.say(`${manifest.total_tokens} tokens in ${manifest.shards.length} shard(s) (${manifest.dtype}, ${tokenizer.name}) -> ${flags.out}`);
    this.say(`train with: --set data.source=${flags.out} --set data.tokenizer=${tokenizer.name}`);
    return manifest;
  }
}
