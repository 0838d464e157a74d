#!/usr/bin/env node
// The AWS SDK warns on every start under Node 20 (it moves to Node 22 in 2027); dbb pins the SDK.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
// Compression runs on libuv's thread pool (src/compress), sized once, at its first use: give it a
// thread per core plus one for file I/O, unless the operator chose a size.
process.env.UV_THREADPOOL_SIZE ??= String(Math.max(4, require('node:os').availableParallelism() + 1))
// Under a uid without a passwd entry (docker run --user 12345:0, OpenShift's arbitrary uids)
// os.userInfo() throws, and oclif calls it to guess the shell whenever SHELL is unset.
if (process.env.SHELL === undefined) {
  try {
    require('node:os').userInfo()
  } catch {
    process.env.SHELL = '/bin/sh'
  }
}

require('@oclif/core').execute({dir: __dirname})
