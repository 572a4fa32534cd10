#!/usr/bin/env node
// oclif entry: commands are compiled to dist/commands (run `npm run build` first; `npm test` does).
require('@oclif/core').execute({ dir: __dirname }).catch(require('@oclif/core/handle'));
