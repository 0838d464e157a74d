#!/usr/bin/env node
// Regenerates the README's configuration tables from the setting declarations (src/settings.ts and
// the built-in backends' settings); run after `npm run build`. See src/settings-docs.ts.
const path = require('node:path')
const {writeSettingsDocs} = require('../dist/settings-docs')

const readme = path.join(__dirname, '..', 'README.md')
console.log(writeSettingsDocs(readme) ? 'README.md: settings tables updated' : 'README.md: settings tables already up to date')
