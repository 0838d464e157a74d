// Runs s3rver (a real S3-protocol server) as its own process for the tests:
//   node --openssl-legacy-provider s3rver-process.js <directory> <port> <bucket>
// Prints one JSON line {"port": N} once listening, and exits when its stdin closes, so a killed
// test runner never leaves a server behind. The legacy provider is needed by s3rver's DES-based
// ListObjectsV2 continuation tokens (paging answers 500 without it).
'use strict'
const S3rver = require('s3rver')

const [directory, port, bucket] = process.argv.slice(2)
const server = new S3rver({
  address: '127.0.0.1',
  port: Number(port),
  directory,
  silent: true,
  configureBuckets: bucket ? [{name: bucket, configs: []}] : [],
})

server.run().then(
  (address) => process.stdout.write(`${JSON.stringify({port: address.port})}\n`),
  (error) => {
    process.stderr.write(`s3rver failed to start: ${error.message}\n`)
    process.exit(1)
  },
)

process.stdin.on('end', () => process.exit(0))
process.stdin.on('close', () => process.exit(0))
process.stdin.resume()
