// The single-file bundle is what runs on GPU machines that have no node_modules. Build it as scripts/gpu-pack.sh
// does and run it from a folder with no node_modules anywhere above it, so a top-level import of a package the
// bundle leaves out (resvg, vega, webgpu) fails here and not on the GPU machine.
import { execFileSync, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const ROOT = path.join(__dirname, '..', '..');
let dir: string;
let bundle: string;

beforeAll(() => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mlactl-bundle-'));
  bundle = path.join(dir, 'mlactl.cjs');
  execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'bundle.js'), bundle]);
  // What a project copy on the GPU machine has: package.json and configs/, no node_modules.
  fs.writeFileSync(path.join(dir, 'package.json'), JSON.stringify({ name: 'mlactl', version: '0.0.0-test' }));
  fs.cpSync(path.join(ROOT, 'configs'), path.join(dir, 'configs'), { recursive: true });
}, 60_000);

afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

const run = (...args: string[]) => spawnSync(process.execPath, [bundle, ...args], { cwd: dir, encoding: 'utf8', timeout: 120_000 });

test('model info runs from the bundle and finds configs/ beside it', () => {
  const r = run('model', 'info', '-c', 'configs/models/tiny.yaml', '--json');
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const info = JSON.parse(r.stdout);
  expect(info.name).toBe('tiny');
  expect(info.parameters.total).toBe(41408); // as bin/run.js reports for the tiny preset
});

test('bench decode runs from the bundle: numbers written, the missing plot only a warning', () => {
  const out = path.join(dir, 'decode');
  const r = run('bench', 'decode', '--backend', 'cpu', '-c', 'configs/models/tiny.yaml', '--contexts', '64', '--repeats', '2', '--warmup', '1', '-o', out);
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/warning: plot not written: Cannot find module 'vega'/);
  const csv = fs.readFileSync(path.join(out, 'decode.csv'), 'utf8').trim().split('\n');
  expect(csv[0].split(',')).toContain('ratio_to_latent');
  expect(csv).toHaveLength(1 + 3); // the header and one row per cache at the one context
}, 120_000);

test('an unknown command is exit 2 with the list of commands', () => {
  const r = run('nope');
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/unknown command 'nope'; commands: bench decode, bench plot, compare, /);
});
