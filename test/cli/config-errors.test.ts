// End-to-end: the built CLI (`npm test` builds dist/ first) on bad configs and `model info`.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { runMlactl as mlactl } from '../cli';

const ROOT = path.resolve(__dirname, '../..');
const TINY = 'configs/models/tiny.yaml';

beforeAll(() => {
  for (const f of ['dist/commands/model/info.js', 'dist/commands/verify.js', 'dist/commands/score.js']) {
    if (!fs.existsSync(path.join(ROOT, f))) throw new Error(`${f} is missing: build first with \`npm run build\` (npm test does it)`);
  }
});

/** Exit code 2 and exactly one line on stderr that matches every pattern; returns that line. */
async function expectOneLineError(args: string[], ...patterns: RegExp[]): Promise<string> {
  const r = await mlactl(args);
  const lines = r.stderr.split('\n').filter((l) => l.trim() !== '');
  expect({ code: r.code, lines: lines.length }).toEqual({ code: 2, lines: 1 });
  for (const p of patterns) expect(lines[0]).toMatch(p);
  return lines[0];
}

test('bad configs: exit code 2 and one stderr line naming the key or file', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-cli-'));
  const badFile = path.join(dir, 'bad.yaml');
  fs.writeFileSync(badFile, `extends: ${path.join(ROOT, 'configs/base.yaml')}\nmodel:\n  n_heads: 4\n  qk_norm:\n    groups: 2\n`);
  await Promise.all([
    expectOneLineError(['model', 'info', '--config', TINY, '--set', 'model.d_modle=64'], /model\.d_modle/, /unknown key/, /did you mean model\.d_model/),
    expectOneLineError(['model', 'info', '--config', badFile], /model\.qk_norm\.groups/, /unknown key/, /bad\.yaml:5/),
    expectOneLineError(['model', 'info', '--config', TINY, '--set', 'model.d_model=wide'], /model\.d_model/, /expected a positive integer/),
    expectOneLineError(['model', 'info', '--config', TINY, '--set', 'model.qk_rope_head_dim=5'], /model\.qk_rope_head_dim/, /even/),
    expectOneLineError(['model', 'info', '--config', TINY, '--set', 'model.qk_norm.key_groups=3'], /model\.qk_norm\.key_groups/, /divide model\.n_heads \(4\)/),
    expectOneLineError(['model', 'info', '--config', 'configs/models/no-such.yaml'], /configs\/models\/no-such\.yaml/, /no such file/),
  ]);
  // The commands that build models report their own bad input the same way.
  await Promise.all([
    expectOneLineError(['verify', '--backend', 'cpu'], /exactly one of --config FILE or --run DIR/),
    expectOneLineError(['score', '--run', path.join(dir, 'nothing'), '--text', 'hi', '--backend', 'cpu'], /nothing: no such folder/),
  ]);
});

test('sizes past the limits, unsafe extends targets and escape bytes: one line, exit 2, nothing echoed', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-cli-'));
  const secret = path.join(dir, 'shadow');
  fs.writeFileSync(secret, 'root:$6$SECRETHASH:19000:0:99999:7:::\n');
  const extendsSecret = path.join(dir, 'secret.yaml');
  fs.writeFileSync(extendsSecret, `extends: ${secret}\n`);
  const extendsZero = path.join(dir, 'zero.yaml');
  fs.writeFileSync(extendsZero, 'extends: /dev/zero\n');
  const escapes = path.join(dir, 'escapes.yaml');
  fs.writeFileSync(escapes, 'model:\n  "\\e]0;owned\\a\\e[2J": 1\n');
  const lines = await Promise.all([
    expectOneLineError(['model', 'info', '--config', TINY, '--set', 'model.max_seq_len=1e9'], /model\.max_seq_len/, /2\^24/),
    expectOneLineError(['model', 'info', '--config', TINY, '--set', 'model.vocab_size=1e12'], /model\.vocab_size/, /2\^31 - 1/),
    expectOneLineError(['model', 'info', '--config', extendsSecret], /at extends/, /not a \.yaml or \.yml file/),
    expectOneLineError(['model', 'info', '--config', extendsZero], /at extends/, /not a regular file/),
    expectOneLineError(['model', 'info', '--config', escapes], /unknown key/, /\\x1b\]0;owned\\x07\\x1b\[2J/),
  ]);
  for (const line of lines) {
    expect(line).not.toMatch(/SECRET/);
    expect(line).not.toMatch(/[\x00-\x08\x0b-\x1f\x7f-\x9f]/);
  }
  fs.rmSync(dir, { recursive: true, force: true });
});

test('model info --json parses and reports the preset by hand', async () => {
  const r = await mlactl(['model', 'info', '--config', 'configs/models/paper-400m.yaml', '--json']);
  expect(r.code).toBe(0);
  const info = JSON.parse(r.stdout);
  expect(info.name).toBe('paper-400m');
  expect(info.parameters.total).toBe(393_272_320);
  expect(info.kv_cache.map((c: { kind: string; bytes_per_token_per_layer: number }) => [c.kind, c.bytes_per_token_per_layer])).toEqual([
    ['latent', 1152], ['latent+invrms', 1216], ['full-key', 7168],
  ]);
  expect(info.flops_per_token.seq_len).toBe(2048);

  const human = await mlactl(['model', 'info', '--config', TINY, '--set', 'model.variant=qk-norm']);
  expect(human.code).toBe(0);
  expect(human.stdout).toMatch(/\| total \| \d+ \|/);
  expect(human.stdout).toContain('| latent (not for qk-norm) |');
});
