import {readFileSync, writeFileSync} from 'node:fs'

import {SETTING_NAMES, SettingSpec, declaration, setting} from './settings'
import {fileVariable} from './secrets'

/**
 * The README's configuration tables are output, not prose (as `oclif readme` does for commands):
 * each `<!-- settings groups="DATABASE,BACKUP" -->` … `<!-- settingsstop -->` region is rewritten
 * with a table of the core settings of those groups (src/settings.ts), and each
 * `<!-- settings backend="s3" -->` region with a storage backend's declared settings. Every core
 * setting must land in exactly one table, so a new setting cannot be left out of the README.
 * `npm run docs:settings` writes the README; test/unit/settings-docs.unit.test.ts fails when the
 * committed README differs from what this renders.
 */

const START = /<!-- settings (groups|backend)="([^"]*)" -->\n[\s\S]*?<!-- settingsstop -->/g

export class SettingsDocsError extends Error {}

/** `readme` with every settings region regenerated. Throws when a region names an unknown group or backend, or a core setting is in no region. */
export function renderSettingsDocs(readme: string, backends: Readonly<Record<string, readonly SettingSpec[]>>): string {
  const placed = new Map<string, number>()
  const rendered = readme.replace(START, (_region, kind: string, names: string) => {
    const marker = `<!-- settings ${kind}="${names}" -->`
    if (kind === 'backend') {
      const specs = backends[names]
      if (specs === undefined) throw new SettingsDocsError(`${marker}: no storage backend "${names}" (known: ${Object.keys(backends).join(', ')})`)
      return `${marker}\n${settingsTable(specs, names)}<!-- settingsstop -->`
    }

    const groups = names.split(',').map((group) => group.trim())
    const known = new Set(SETTING_NAMES.map((name) => declaration(name).group))
    for (const group of groups) if (!known.has(group)) throw new SettingsDocsError(`${marker}: no settings group "${group}" (known: ${[...known].join(', ')})`)
    const specs = SETTING_NAMES.filter((name) => groups.includes(declaration(name).group)).map((name) => setting(name))
    for (const spec of specs) placed.set(spec.env, (placed.get(spec.env) ?? 0) + 1)
    return `${marker}\n${settingsTable(specs)}<!-- settingsstop -->`
  })

  const missing = SETTING_NAMES.filter((name) => placed.get(name) !== 1)
  if (missing.length > 0) {
    throw new SettingsDocsError(
      `each setting belongs in exactly one README table; not so for ${missing.map((name) => `${name} (group ${declaration(name).group}, ${placed.get(name) ?? 0} tables)`).join(', ')}: add its group to one <!-- settings groups="…" --> marker`,
    )
  }

  return rendered
}

/** A markdown table: Variable, Flag, Default, Meaning. */
export function settingsTable(specs: readonly SettingSpec[], backend?: string): string {
  const rows = specs.map((spec) => `| \`${spec.env}\` | ${flagCell(spec)} | ${defaultCell(spec, backend)} | ${meaningCell(spec)} |`)
  return ['| Variable | Flag | Default | Meaning |', '|---|---|---|---|', ...rows, ''].join('\n')
}

function flagCell(spec: SettingSpec): string {
  return spec.char ? `\`-${spec.char}\`, \`--${spec.flag}\`` : `\`--${spec.flag}\``
}

function defaultCell(spec: SettingSpec, backend: string | undefined): string {
  if (spec.required) return backend ? `— (required for \`${backend}\`)` : '— (required)'
  if (spec.default !== undefined) return `\`${cell(spec.default)}\``
  return spec.defaultText === undefined ? '—' : cell(spec.defaultText)
}

function meaningCell(spec: SettingSpec): string {
  const secret = spec.secret ? ` Secret: never logged; or \`${fileVariable(spec.env)}\`, a file holding it.` : ''
  return `${cell(spec.summary)}${secret}${spec.docs ? ` ${spec.docs.replaceAll('|', '\\|')}` : ''}`
}

/** Plain text as a table cell: no column breaks, no HTML tags (`<prefix>`). */
function cell(text: string): string {
  return text.replaceAll('|', '\\|').replaceAll('<', '&lt;').replaceAll('>', '&gt;')
}

/** The built-in backends' settings, from their packages (after a build). */
export function builtInBackends(): Record<string, readonly SettingSpec[]> {
  const local = require('@dbb/storage-local') as {localProvider: {settings: SettingSpec[]}}
  const s3 = require('@dbb/storage-s3') as {S3_SETTINGS: SettingSpec[]}
  return {local: local.localProvider.settings, s3: s3.S3_SETTINGS}
}

/** `npm run docs:settings`: rewrites the README's settings tables; says whether anything changed. */
export function writeSettingsDocs(file: string): boolean {
  const before = readFileSync(file, 'utf8')
  const after = renderSettingsDocs(before, builtInBackends())
  if (after !== before) writeFileSync(file, after)
  return after !== before
}
