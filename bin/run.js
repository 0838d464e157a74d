#!/usr/bin/env node
// The AWS SDK warns on every start under Node 20 (it moves to Node 22 in 2027); dbb pins the SDK.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true'
require('@oclif/core').execute({dir: __dirname})
