// Preloaded into the measured dbb process (`node --require bench/rss-probe.js bin/run.js …`):
// writes the process's peak resident set size (all threads) as JSON to DBB_BENCH_RSS_FILE at exit.
'use strict'
const file = process.env.DBB_BENCH_RSS_FILE
if (file) {
  process.on('exit', () => {
    require('node:fs').writeFileSync(file, JSON.stringify({maxRssBytes: process.resourceUsage().maxRSS * 1024}))
  })
}
