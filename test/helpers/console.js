// jest's console decorates and reroutes output; oclif writes through console.log, so tests that
// capture output use a plain console bound to the real streams.
global.console = new (require('node:console').Console)({stdout: process.stdout, stderr: process.stderr})
