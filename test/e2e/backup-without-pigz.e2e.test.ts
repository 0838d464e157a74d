import {execFile} from 'node:child_process'
import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {promisify} from 'node:util'

import {pathWithout, runCli, tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {fingerprint, seedDatabase} from '../helpers/seed'

const exec = promisify(execFile)

/**
 * Without igzip or pigz on PATH, dbb gzips in-process and reads every byte pg_dump writes, collecting the
 * dead read buffers as it goes (src/dead-buffers.ts: scavenges and full collections in the middle
 * of the stream). A dump large enough for dozens of those is stored, checked, and restores with
 * stock `gunzip | psql` to the same rows.
 */
describe('dbb backup run without igzip or pigz on PATH (in-process gzip)', () => {
  let cluster: PgCluster
  let workDir: string

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 400_000)
    workDir = await tempDir('dbb-no-pigz-')
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(workDir, {recursive: true, force: true})
  })

  it('stores a checked gzip that stock gunzip | psql restores to the same rows', async () => {
    const backupDir = path.join(workDir, 'backups')
    await fs.mkdir(backupDir)
    const noPigz = await pathWithout(['pigz', 'igzip'], path.join(workDir, 'bin'))
    await expect(fs.access(path.join(noPigz, 'pigz'))).rejects.toMatchObject({code: 'ENOENT'})
    await expect(fs.access(path.join(noPigz, 'igzip'))).rejects.toMatchObject({code: 'ENOENT'})
    const backup = await runCli(['backup', 'run', '--json', '--no-prune'], {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: backupDir, PATH: noPigz})
    expect(backup.code === 0 ? '' : `${backup.stdout}${backup.stderr}`).toBe('')
    const {metadata} = JSON.parse(backup.stdout) as {metadata: {id: string; sha256: string; sizeBytes: number; uncompressedBytes: number}}
    // Dozens of the collector's intervals (1 MiB) passed through dbb.
    expect(metadata.uncompressedBytes).toBeGreaterThan(30 * 1024 * 1024)
    const stored = await fs.readFile(path.join(backupDir, metadata.id))
    expect(stored.length).toBe(metadata.sizeBytes)
    expect(createHash('sha256').update(stored).digest('hex')).toBe(metadata.sha256)

    await cluster.psql('CREATE DATABASE shop_restored')
    const pgEnv = {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password}
    await exec('bash', ['-o', 'pipefail', '-c', `gunzip -c ${path.join(backupDir, metadata.id)} | psql -X -q -v ON_ERROR_STOP=1 -d shop_restored`], {env: pgEnv, maxBuffer: 64 * 1024 * 1024})
    expect(await fingerprint(cluster, 'shop_restored')).toEqual(await fingerprint(cluster, 'shop'))
  }, 240_000)
})
