import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {ROOT, runCli, tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'

/**
 * The extension point: a third storage backend, from a plugin outside dbb's own packages, is
 * installed with `dbb plugins link` and takes a backup end to end with no change to core.
 */
describe('a third-party storage backend installed with `dbb plugins link`', () => {
  const fixture = path.join(ROOT, 'test', 'fixtures', 'dbb-storage-flatfile')
  let cluster: PgCluster
  let home: string
  let flatDir: string
  let pluginEnv: Record<string, string>

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 5000)
    home = await tempDir('dbb-xdg-')
    flatDir = await tempDir('dbb-flat-')
    // An isolated oclif data dir: the link must not leak into other tests or the user's install.
    pluginEnv = {XDG_DATA_HOME: path.join(home, 'data'), XDG_CACHE_HOME: path.join(home, 'cache'), XDG_CONFIG_HOME: path.join(home, 'config')}
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(home, {recursive: true, force: true})
    await fs.rm(flatDir, {recursive: true, force: true})
  })

  it('is unknown before the link, usable after it, and gone after unlink', async () => {
    const before = await runCli(['backup', 'list'], {...pluginEnv, STORAGE_BACKEND: 'flatfile'})
    expect(before.code).toBe(2)
    expect(before.stderr).toMatch(/unknown storage backend "flatfile"; installed: .*local/)

    const link = await runCli(['plugins', 'link', '--no-install', fixture], pluginEnv)
    expect(link.code).toBe(0)

    const backends = await runCli(['backends', '--json'], pluginEnv)
    expect(backends.code).toBe(0)
    expect(JSON.parse(backends.stdout)).toEqual(
      expect.arrayContaining([
        {
          name: 'flatfile',
          summary: 'Test backend: one file per object in FLATFILE_DIR',
          plugin: 'dbb-storage-flatfile',
          contractVersion: 2,
          settings: [{env: 'FLATFILE_DIR', flag: 'flatfile-dir', summary: 'Directory for flatfile objects', example: '/srv/flat', required: true, secret: false}],
        },
        expect.objectContaining({name: 'local', plugin: '@dbb/storage-local'}),
      ]),
    )

    const missingSetting = await runCli(['backup', 'list'], {...pluginEnv, STORAGE_BACKEND: 'flatfile'})
    expect(missingSetting.code).toBe(2)
    expect(missingSetting.stderr).toContain('Error: FLATFILE_DIR: is required with STORAGE_BACKEND=flatfile (example: FLATFILE_DIR=/srv/flat)')

    const env = {...pluginEnv, ...cluster.dbbEnv('shop'), STORAGE_BACKEND: 'flatfile'}
    // The plugin's setting is a flag of core commands too.
    const run = await runCli(['backup', 'run', '--json', '--flatfile-dir', flatDir], env)
    expect(run.code).toBe(0)
    const {metadata} = JSON.parse(run.stdout)
    expect((await fs.readdir(flatDir)).sort()).toEqual([encodeURIComponent(metadata.id), encodeURIComponent(`${metadata.id}.meta.json`)].sort())

    const list = await runCli(['backup', 'list', '--json'], {...env, FLATFILE_DIR: flatDir})
    expect(JSON.parse(list.stdout)).toEqual([{...metadata, status: 'ok', drill: {status: 'never'}}])
    const out = path.join(home, 'copy.sql.gz')
    const download = await runCli(['backup', 'download', 'latest', '-o', out], {...env, FLATFILE_DIR: flatDir})
    expect(download.code).toBe(0)
    expect((await fs.stat(out)).size).toBe(metadata.sizeBytes)

    const unlink = await runCli(['plugins', 'unlink', 'dbb-storage-flatfile'], pluginEnv)
    expect(unlink.code).toBe(0)
    const after = await runCli(['backup', 'list'], {...pluginEnv, STORAGE_BACKEND: 'flatfile', FLATFILE_DIR: flatDir})
    expect(after.code).toBe(2)
  })
})
