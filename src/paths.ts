// Where mlactl's own files (configs/, bin/) live. Found by walking up to mlactl's package.json rather than by a
// fixed number of `..`: the compiled tree (dist/x/y.js), the sources under jest (src/x/y.ts) and the single-file
// bundle (.gpu/mlactl.cjs) sit at different depths below the project root.
import * as fs from 'fs';
import * as path from 'path';

function findPackageRoot(start: string): string {
  for (let dir = start; ; dir = path.dirname(dir)) {
    try {
      if ((JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8')) as { name?: string }).name === 'mlactl') return dir;
    } catch {
      // no package.json here, or not JSON: keep walking
    }
    if (path.dirname(dir) === dir) return process.cwd();
  }
}

export const PACKAGE_ROOT = findPackageRoot(__dirname);
export const CONFIGS_DIR = path.join(PACKAGE_ROOT, 'configs');

/**
 * The script that runs mlactl, for commands that start copies of themselves (parallel experiment arms, the demo's
 * evaluations): bin/run.js normally, the bundle itself when running as the single-file bundle, which sets
 * MLACTL_ENTRY because the GPU machine has no node_modules for bin/run.js to load.
 */
export function cliEntry(): string {
  return process.env.MLACTL_ENTRY ?? path.join(PACKAGE_ROOT, 'bin', 'run.js');
}
