import {execFileSync} from 'node:child_process'
import {readFileSync, readdirSync} from 'node:fs'
import * as path from 'node:path'

const ROOT = path.resolve(__dirname, '..', '..')

function commandIds(dir: string, prefix = ''): string[] {
  return readdirSync(dir, {withFileTypes: true}).flatMap((entry) => {
    if (entry.isDirectory()) return commandIds(path.join(dir, entry.name), `${prefix}${entry.name}:`)
    return entry.name.endsWith('.ts') ? [`${prefix}${entry.name.replace(/\.ts$/, '')}`] : []
  })
}

/**
 * oclif loads commands from oclif.manifest.json once it exists, so a stale committed manifest
 * means commands or flags that silently don't exist for users. The build regenerates it
 * (`npm run build` runs `oclif manifest`); this test fails when that changed the committed file.
 */
describe('oclif.manifest.json', () => {
  const manifest = JSON.parse(readFileSync(path.join(ROOT, 'oclif.manifest.json'), 'utf8'))

  it('lists every command in src/commands', () => {
    expect(Object.keys(manifest.commands).sort()).toEqual(commandIds(path.join(ROOT, 'src', 'commands')).sort())
  })

  it('is the committed one (run `npm run build` and commit oclif.manifest.json)', () => {
    const committed = execFileSync('git', ['show', 'HEAD:oclif.manifest.json'], {cwd: ROOT, encoding: 'utf8'})
    expect(manifest).toEqual(JSON.parse(committed))
  })
})
