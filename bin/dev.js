#!/usr/bin/env node
// Development entry: runs the compiled commands like bin/run.js, but with oclif's development flag
// (full stack traces on errors). Build first: `npm run build`.
if ((process.argv[2] === 'wal' && process.argv[3] === 'fetch') || process.argv[2] === 'wal:fetch') {
  // The restore_command exit-code contract, as in bin/run.js.
  require('../dist/wal/fetch-exit').guardWalFetchExit()
}

process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, require('node:os').availableParallelism() + 1))
require('@oclif/core').execute({development: true, dir: __dirname})
