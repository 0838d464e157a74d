import {execFile} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'
import {promisify} from 'node:util'

import {ROOT} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {fingerprint, seedDatabase} from '../helpers/seed'

const run = promisify(execFile)
const NPM_FLAGS = ['--prefer-offline', '--no-audit', '--no-fund', '--loglevel=error']

/**
 * Issue 17's done-when, end to end and outside this repository: a backend made from
 * templates/storage-plugin in a temp directory passes the kit (from `npm pack` of
 * packages/storage-test-suite), is installed with `dbb plugins install` into a dbb installed
 * globally from `npm pack` of this repository (into a temp prefix), and takes a backup that is
 * restored into a real PostgreSQL, rows compared. Only local tarballs of dbb's packages are used;
 * third-party dependencies (typescript, oclif, pg, …) come from npm's cache when present.
 */
describe('a backend plugin from the template, outside the repository, through a globally installed dbb', () => {
  let work: string
  let cluster: PgCluster
  let env: NodeJS.ProcessEnv

  beforeAll(async () => {
    work = await fs.mkdtemp(path.join(os.tmpdir(), 'dbb-template-'))
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 3000)
    env = {
      PATH: `${path.join(work, 'prefix', 'bin')}:${process.env.PATH}`,
      HOME: process.env.HOME,
      LANG: 'C.UTF-8',
      LOG_FORMAT: 'json',
      AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
      // The CAs this machine trusts (a TLS-inspecting proxy before the registry): the official Node
      // binary knows only its bundled list, and npm fetches what its cache lacks.
      ...(process.env.NODE_EXTRA_CA_CERTS ? {NODE_EXTRA_CA_CERTS: process.env.NODE_EXTRA_CA_CERTS} : {}),
      // oclif's data dir (installed plugins) inside the temp dir: nothing leaks into the user's dbb.
      XDG_DATA_HOME: path.join(work, 'xdg', 'data'),
      XDG_CACHE_HOME: path.join(work, 'xdg', 'cache'),
      XDG_CONFIG_HOME: path.join(work, 'xdg', 'config'),
    }
  }, 60_000)

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(work, {recursive: true, force: true})
  })

  const sh = (file: string, args: string[], cwd: string, extra: NodeJS.ProcessEnv = {}) =>
    run(file, args, {cwd, env: {...env, ...extra}, maxBuffer: 64 * 1024 * 1024, timeout: 300_000})

  it('passes the kit, installs with `dbb plugins install`, and backs up and restores rows', async () => {
    const packs = path.join(work, 'packs')
    await fs.mkdir(packs)
    const pack = async (directory: string) => (await sh('npm', ['pack', directory, '--pack-destination', packs, '--loglevel=error'], ROOT)).stdout.trim().split('\n').pop()!
    const contractTgz = path.join(packs, await pack(path.join(ROOT, 'packages', 'storage-contract')))
    const suiteTgz = path.join(packs, await pack(path.join(ROOT, 'packages', 'storage-test-suite')))
    const dbbTgz = path.join(packs, await pack(ROOT))

    // The author's side: copy the template, use the published packages (here: their tarballs), test.
    const plugin = path.join(work, 'dbb-storage-example')
    await fs.cp(path.join(ROOT, 'templates', 'storage-plugin'), plugin, {recursive: true})
    const manifest = JSON.parse(await fs.readFile(path.join(plugin, 'package.json'), 'utf8'))
    manifest.dependencies['@dbb/storage-contract'] = `file:${contractTgz}`
    manifest.devDependencies['@dbb/storage-test-suite'] = `file:${suiteTgz}`
    await fs.writeFile(path.join(plugin, 'package.json'), JSON.stringify(manifest, null, 2))
    await sh('npm', ['install', ...NPM_FLAGS], plugin)
    const kit = await sh('npm', ['test'], plugin)
    // The spec reporter (Node ≥ 23 default) prints "ℹ fail 0", TAP "# fail 0".
    expect(kit.stdout).toMatch(/^(?:#|ℹ) fail 0$/m)
    expect(Number(/^(?:#|ℹ) pass (\d+)$/m.exec(kit.stdout)?.[1])).toBeGreaterThanOrEqual(18)
    const pluginTgz = path.join(plugin, (await sh('npm', ['pack', '--loglevel=error'], plugin)).stdout.trim().split('\n').pop()!)

    // The operator's side: dbb from its tarball into a temp prefix, the plugin from its tarball.
    await sh('npm', ['install', '-g', '--prefix', path.join(work, 'prefix'), dbbTgz, ...NPM_FLAGS], work)
    expect((await sh('dbb', ['--version'], work)).stdout).toMatch(/^dbb\/\d+\.\d+\.\d+ /)
    const install = await sh('dbb', ['plugins', 'install', `file:${pluginTgz}`], work)
    expect(install.stderr).not.toMatch(/error|warning/i)
    const backends = JSON.parse((await sh('dbb', ['backends', '--json'], work)).stdout)
    expect(backends).toEqual(
      expect.arrayContaining([
        expect.objectContaining({name: 'example', plugin: 'dbb-storage-example', contractVersion: 2}),
        expect.objectContaining({name: 'local', plugin: '@dbb/storage-local'}),
      ]),
    )

    const storeDir = path.join(work, 'store')
    await fs.mkdir(storeDir)
    const dbbEnv = {...cluster.dbbEnv('shop'), STORAGE_BACKEND: 'example', EXAMPLE_DIR: storeDir}
    const backup = JSON.parse((await sh('dbb', ['backup', 'run', '--json'], work, dbbEnv)).stdout)
    expect(backup.metadata.sizeBytes).toBeGreaterThan(0)
    // Taken after the backup: the fingerprint reads a sequence's next value, which moves it.
    const before = await fingerprint(cluster, 'shop')
    await cluster.psql('DELETE FROM customers; DELETE FROM events WHERE id > 100', 'shop')
    expect(await cluster.psql('SELECT count(*) FROM events', 'shop')).toBe('100')
    const restore = JSON.parse((await sh('dbb', ['restore', 'latest', '--force', '--json'], work, dbbEnv)).stdout)
    expect(restore).toMatchObject({id: backup.metadata.id, database: 'shop'})
    expect(await fingerprint(cluster, 'shop')).toEqual(before)

    // `plugins link` works in the installed dbb too (after uninstalling the tarball install).
    await sh('dbb', ['plugins', 'uninstall', 'dbb-storage-example'], work)
    await sh('dbb', ['plugins', 'link', '--no-install', plugin], work)
    expect((await sh('dbb', ['backup', 'list', '--json'], work, dbbEnv)).stdout).toContain(backup.metadata.id)
  }, 900_000)
})
