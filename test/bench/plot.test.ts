// `bench plot` redraws a decode folder's plots from decode.json: the way to get plots for results measured by the
// GPU bundle, which writes numbers only. Runs the real CLI (built by `npm test`).
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const ROOT = path.join(__dirname, '..', '..');
const BIN = path.join(ROOT, 'bin', 'run.js');
const cli = (...args: string[]) => spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', cwd: ROOT, timeout: 120_000 });

let dir: string;
beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-plot-'));
});
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

test('redraws decode.svg and decode.png from decode.json alone', () => {
  const out = path.join(dir, 'decode');
  const r = cli('bench', 'decode', '--backend', 'cpu', '-c', 'configs/models/tiny.yaml', '--contexts', '32,64', '--repeats', '2', '--warmup', '0', '-o', out);
  expect(r.status).toBe(0);
  // Keep only the numbers, as the GPU bundle leaves them.
  for (const f of fs.readdirSync(out)) if (f !== 'decode.json') fs.rmSync(path.join(out, f));
  const p = cli('bench', 'plot', out, '--json');
  expect(p.status).toBe(0);
  expect(JSON.parse(p.stdout)).toEqual({ dir: out, svg: path.join(out, 'decode.svg'), png: path.join(out, 'decode.png') });
  const svg = fs.readFileSync(path.join(out, 'decode.svg'), 'utf8');
  expect(svg).toMatch(/^<svg/);
  expect(svg).toContain('latent+invrms'); // the legend names the caches the numbers came from
  expect(fs.readFileSync(path.join(out, 'decode.png')).subarray(1, 4).toString()).toBe('PNG');
}, 120_000);

test('a missing or malformed decode.json is one line naming the file and key, exit 2, nothing written', () => {
  const missing = cli('bench', 'plot', path.join(dir, 'nowhere'));
  expect(missing.status).toBe(2);
  expect(missing.stderr).toBe(`mlactl: ${path.join(dir, 'nowhere', 'decode.json')}: no such file (is this a bench decode folder?)\n`);
  const bad = path.join(dir, 'bad');
  fs.mkdirSync(bad);
  fs.writeFileSync(path.join(bad, 'decode.json'), JSON.stringify({ rows: [{ context: 1024, cache: 'latent' }], ratios: [] }));
  const r = cli('bench', 'plot', bad);
  expect(r.status).toBe(2);
  expect(r.stderr).toBe(`mlactl: ${path.join(bad, 'decode.json')}: key "rows[0].median_ms" must be a number\n`);
  expect(fs.readdirSync(bad)).toEqual(['decode.json']);
});
