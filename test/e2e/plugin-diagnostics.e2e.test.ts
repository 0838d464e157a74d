import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {runCli, tempDir} from '../helpers/cli'

/**
 * Broken plugins, as dbb meets them: each is linked into an isolated oclif data dir and used
 * through the built CLI. What a user relies on: the exit code, and a message that names the plugin
 * and what is wrong with it — never "storage.list is not a function" or a command that hangs.
 */
describe('diagnosing broken storage plugins', () => {
  let home: string
  let pluginEnv: Record<string, string>

  /** A plugin directory whose hook returns the provider written in `provider` (JavaScript source). */
  async function plugin(name: string, provider: string): Promise<string> {
    const directory = path.join(home, 'plugins', name)
    await fs.mkdir(directory, {recursive: true})
    await fs.writeFile(
      path.join(directory, 'package.json'),
      JSON.stringify({name, version: '1.0.0', main: 'hook.js', oclif: {hooks: {'dbb:storage-provider': './hook.js'}}}),
    )
    await fs.writeFile(path.join(directory, 'hook.js'), `const {Readable} = require('node:stream')\nmodule.exports = async () => (${provider})\n`)
    const link = await runCli(['plugins', 'link', '--no-install', directory], pluginEnv)
    expect(link.code).toBe(0)
    return directory
  }

  const backendWithout = (missing: string, extra = '') => `{
    name: 'x', location: 'x:', ${extra}
    ${['put', 'get', 'stat', 'list', 'delete', 'health'].filter((method) => method !== missing).map((method) => `${method}: async () => undefined`).join(',\n    ')}
  }`

  beforeAll(async () => {
    home = await tempDir('dbb-diag-')
    pluginEnv = {XDG_DATA_HOME: path.join(home, 'data'), XDG_CACHE_HOME: path.join(home, 'cache'), XDG_CONFIG_HOME: path.join(home, 'config')}
    await plugin('dbb-storage-future', `{name: 'future', summary: 'from the future', contractVersion: 3, settings: [], create: async () => (${backendWithout('')})}`)
    await plugin('dbb-storage-nolist', `{name: 'nolist', summary: 'no list()', contractVersion: 2, settings: [], create: async () => (${backendWithout('list')})}`)
    await plugin(
      'dbb-storage-greedy',
      `{name: 'greedy', summary: 'wants the password', settings: [
        {env: 'DB_PASSWORD', flag: 'greedy-password', summary: 'p', example: 'x'},
        {env: 'GREEDY_TOKEN', flag: 'greedy-token', summary: 'Token.', example: 'x', secret: true, default: 'none'}
      ], create: async () => (${backendWithout('')})}`,
    )
    await plugin('dbb-storage-webdav2', `{name: 'WebDAV2', summary: 'bad name', settings: [{env: 'WEBDAV2_URL', flag: 'webdav url', summary: 'u', example: 'x'}], create: async () => ({})}`)
    // Declares a 1 s bound, then never answers a listing.
    await plugin(
      'dbb-storage-hang',
      `{name: 'hang', summary: 'never answers', contractVersion: 2, settings: [], create: async () => ({
        name: 'hang', location: 'hang://127.0.0.1:9', timeBoundMs: 1000,
        put: () => new Promise(() => {}), get: () => new Promise(() => {}), stat: () => new Promise(() => {}),
        delete: () => new Promise(() => {}), health: () => new Promise(() => {}),
        list: () => ({[Symbol.asyncIterator]: () => ({next: () => new Promise(() => {})})}),
      })}`,
    )
  }, 120_000)

  afterAll(async () => {
    await fs.rm(home, {recursive: true, force: true})
  })

  it('refuses a provider built for an incompatible contract version: exit 2, naming the plugin and both versions', async () => {
    const result = await runCli(['backup', 'list'], {...pluginEnv, STORAGE_BACKEND: 'future'})
    expect(result.code).toBe(2)
    expect(result.stderr).toContain(
      'STORAGE_BACKEND: storage backend "future" cannot be used: plugin dbb-storage-future (storage backend "future") was built for storage contract version 3; this dbb supports versions 1 to 2',
    )
  })

  it('refuses at creation a backend without list(), naming the plugin and the method: exit 2', async () => {
    const result = await runCli(['backup', 'list'], {...pluginEnv, STORAGE_BACKEND: 'nolist'})
    expect(result.code).toBe(2)
    expect(result.stderr).toContain('storage plugin dbb-storage-nolist: the backend "nolist" returned by create() does not implement the storage contract: list() is missing')
    expect(result.stderr).not.toContain('is not a function')
  })

  it('names the invalid fields of a provider (an upper-case name, a flag with a space)', async () => {
    const result = await runCli(['backup', 'list'], {...pluginEnv, STORAGE_BACKEND: 'webdav2'})
    expect(result.code).toBe(2)
    expect(result.stderr).toContain('name "WebDAV2" is invalid')
    expect(result.stderr).toContain('setting WEBDAV2_URL: flag "webdav url" is invalid')
  })

  it('warns when a plugin declares DB_PASSWORD, and shows secret, default and required in backends --json', async () => {
    const table = await runCli(['backends'], pluginEnv)
    expect(table.code).toBe(0)
    // oclif wraps warnings at the terminal width: one line per warning again.
    expect(table.stderr.replaceAll(/\s*\n ›\s+/g, ' ')).toContain('plugin dbb-storage-greedy declares DB_PASSWORD, a setting of dbb itself; ignored')
    expect(table.stdout).not.toContain('DB_PASSWORD')
    const result = await runCli(['backends', '--json'], pluginEnv)
    expect(result.code).toBe(0)
    const greedy = (JSON.parse(result.stdout) as {name: string; settings: object[]}[]).find((backend) => backend.name === 'greedy')
    expect(greedy?.settings).toEqual([
      {env: 'GREEDY_TOKEN', flag: 'greedy-token', summary: 'Token.', example: '<secret>', default: '<secret>', required: false, secret: true},
    ])
  })

  it('a backend that never answers fails the command within its time bound (plus grace), naming the plugin', async () => {
    const started = Date.now()
    const result = await runCli(['backup', 'list'], {...pluginEnv, STORAGE_BACKEND: 'hang'})
    // 1 s bound + 1 s grace; the rest is the CLI's start on a loaded machine (it never ends without the bound).
    expect(Date.now() - started).toBeLessThan(30_000)
    expect(result.code).toBe(1)
    expect(result.stderr).toContain('storage backend "hang" (plugin dbb-storage-hang) did not answer')
    expect(result.stderr).toContain('hang://127.0.0.1:9 is not responding')
  })
})
