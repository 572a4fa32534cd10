#!/usr/bin/env node
// oclif entry: commands are compiled to dist/commands (run `npm run build` first; `npm test` does).
// TensorFlow.js prints a banner recommending tfjs-node whenever its CPU backend loads in Node; mlactl chooses
// backends itself and says why, so that one message is dropped.
const warn = console.warn;
console.warn = (...args) => {
  if (!String(args[0] ?? '').includes('looks like you are running TensorFlow.js in Node.js')) warn(...args);
};
require('@oclif/core').execute({ dir: __dirname }).catch(require('@oclif/core/handle'));
