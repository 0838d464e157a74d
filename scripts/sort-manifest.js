#!/usr/bin/env node
// `oclif manifest` lists commands in the order the file system returns src/commands' entries,
// which differs between machines and checkouts: every build rewrote the committed manifest with
// the same content in another order. Sorted by command id, a build changes it only when a command
// changes. oclif reads the manifest as a map, so the order means nothing to it.
const fs = require('node:fs')
const path = require('node:path')

const file = path.join(__dirname, '..', 'oclif.manifest.json')
const manifest = JSON.parse(fs.readFileSync(file, 'utf8'))
manifest.commands = Object.fromEntries(Object.entries(manifest.commands).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)))
fs.writeFileSync(file, `${JSON.stringify(manifest, null, 2)}\n`)
