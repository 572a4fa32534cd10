// Vega-Lite spec → SVG (vega's headless View) → PNG (resvg).
//
// vega and vega-lite ship only as ES modules whose graph uses top-level await, which CommonJS `require` cannot
// load (ERR_REQUIRE_ASYNC_MODULE) and jest's module system cannot import. So the compile-and-render step runs
// in one child Node process per report, which imports both packages natively; specs go in on stdin and SVG
// strings come back on stdout as JSON.
import { spawn } from 'child_process';
import * as fs from 'fs';
import { pathToFileURL } from 'url';

/** The font stack written into every plot. Browsers pick the first installed; resvg does the same from the system fonts. */
export const PLOT_FONT = 'DejaVu Sans, Liberation Sans, Arial, Helvetica, sans-serif';

const RENDER_SCRIPT = `
const [vegaUrl, vegaLiteUrl] = process.argv.slice(1);
const vega = await import(vegaUrl);
const vegaLite = await import(vegaLiteUrl);
let input = '';
for await (const chunk of process.stdin) input += chunk;
const results = [];
for (const spec of JSON.parse(input)) {
  try {
    const view = new vega.View(vega.parse(vegaLite.compile(spec).spec), { renderer: 'none' });
    results.push({ svg: await view.toSVG() });
    view.finalize();
  } catch (err) {
    results.push({ error: String(err && err.message || err) });
  }
}
process.stdout.write(JSON.stringify(results));
`;

export type RenderResult = { svg: string } | { error: string };

/** Compile and render several Vega-Lite specs to SVG strings in one child process. */
export async function renderSvgs(specs: object[]): Promise<RenderResult[]> {
  if (specs.length === 0) return [];
  const vegaUrl = pathToFileURL(require.resolve('vega')).href;
  const vegaLiteUrl = pathToFileURL(require.resolve('vega-lite')).href;
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--input-type=module', '-e', RENDER_SCRIPT, vegaUrl, vegaLiteUrl], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const stdout: Buffer[] = [];
    const stderr: Buffer[] = [];
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code !== 0) {
        const lastLine = Buffer.concat(stderr).toString('utf8').trim().split('\n').slice(-1)[0] ?? '';
        reject(new Error(`plot renderer exited with code ${code}: ${lastLine}`));
        return;
      }
      try {
        resolve(JSON.parse(Buffer.concat(stdout).toString('utf8')) as RenderResult[]);
      } catch (err) {
        reject(new Error(`plot renderer returned invalid output: ${(err as Error).message}`));
      }
    });
    child.stdin.end(JSON.stringify(specs));
  });
}

/** Font files shipped with common Linux distributions, used when present as resvg's generic sans-serif. */
const KNOWN_SANS_FONTS: { family: string; files: string[] }[] = [
  { family: 'DejaVu Sans', files: ['/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf', '/usr/share/fonts/dejavu/DejaVuSans.ttf', '/usr/share/fonts/TTF/DejaVuSans.ttf'] },
  { family: 'Liberation Sans', files: ['/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf', '/usr/share/fonts/liberation/LiberationSans-Regular.ttf'] },
];

function installedSansFamily(): string | null {
  for (const font of KNOWN_SANS_FONTS) if (font.files.some((f) => fs.existsSync(f))) return font.family;
  return null;
}

/** PNG at twice the SVG's size on white, with the system fonts so axis labels and titles are drawn. */
export function svgToPng(svg: string, scale = 2): Buffer {
  // Loaded here, not at the top: resvg is a native module the GPU bundle leaves out (docs/gpu.md), and every
  // command but compare must start without it.
  const { Resvg } = require('@resvg/resvg-js') as typeof import('@resvg/resvg-js');
  const family = installedSansFamily();
  const resvg = new Resvg(svg, {
    background: 'white',
    fitTo: { mode: 'zoom', value: scale },
    font: {
      loadSystemFonts: true,
      // Without these, a family list that resolves to nothing leaves the text undrawn.
      ...(family ? { defaultFontFamily: family, sansSerifFamily: family } : {}),
    },
  });
  return resvg.render().asPng();
}

/**
 * Give every id in an SVG a prefix so several plots can be inlined in one HTML page: vega numbers its clip
 * paths from 1 in each SVG, and duplicate ids would make every plot use the first plot's clip regions.
 */
export function prefixSvgIds(svg: string, prefix: string): string {
  return svg
    .replace(/\bid="([^"]+)"/g, `id="${prefix}$1"`)
    .replace(/url\(#([^)]+)\)/g, `url(#${prefix}$1)`)
    .replace(/(xlink:)?href="#([^"]+)"/g, (_m, xlink: string | undefined, id: string) => `${xlink ?? ''}href="#${prefix}${id}"`);
}
