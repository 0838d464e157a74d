import {execFile} from 'node:child_process'
import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {promisify} from 'node:util'

import {runCli, tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {fingerprint, seedDatabase} from '../helpers/seed'

const exec = promisify(execFile)

describe('dbb backup run → list → download → restore with stock psql (real PostgreSQL, local storage)', () => {
  let cluster: PgCluster
  let backupDir: string
  let env: Record<string, string>

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop')
    backupDir = await tempDir()
    env = {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: backupDir}
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(backupDir, {recursive: true, force: true})
  })

  it('stores a verified gzip dump with its sidecar, lists it, and restores it byte-for-byte equal with gunzip | psql', async () => {
    const result = await runCli(['backup', 'run', '--json'], env)
    expect(result.stderr).not.toContain(cluster.password)
    expect(result.code).toBe(0)
    const {metadata} = JSON.parse(result.stdout)
    expect(metadata.id).toMatch(/^backup_\d{8}T\d{6}Z\.sql\.gz$/)
    expect(metadata).toMatchObject({type: 'logical', triggeredBy: 'cli', database: 'shop', format: 'plain', compression: 'gzip'})
    expect(metadata.pgVersion).toMatch(/^\d+\.\d+/)

    const files = (await fs.readdir(backupDir)).sort()
    expect(files).toEqual([metadata.id, `${metadata.id}.meta.json`])
    const dump = await fs.readFile(path.join(backupDir, metadata.id))
    expect(dump.length).toBe(metadata.sizeBytes)
    expect(createHash('sha256').update(dump).digest('hex')).toBe(metadata.sha256)
    const sidecar = JSON.parse(await fs.readFile(path.join(backupDir, `${metadata.id}.meta.json`), 'utf8'))
    expect(sidecar).toEqual(metadata)

    const list = await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: backupDir})
    expect(list.code).toBe(0)
    expect(JSON.parse(list.stdout)).toEqual([{...metadata, status: 'ok', drill: {status: 'never'}}])
    // Scripts get JSON printed with two spaces and one newline, no colour codes (dbb writes it itself, not through oclif's colouring).
    expect(list.stdout).toBe(`${JSON.stringify(JSON.parse(list.stdout), null, 2)}\n`)
    const table = await runCli(['backup', 'list'], {BACKUP_LOCAL_DIR: backupDir})
    expect(table.stdout).toContain(metadata.id)
    expect(table.stdout).toContain(metadata.sha256.slice(0, 12))

    const downloadDir = await tempDir()
    const download = await runCli(['backup', 'download', 'latest', '-o', path.join(downloadDir, 'copy.sql.gz')], {BACKUP_LOCAL_DIR: backupDir})
    expect(download.code).toBe(0)
    expect(await fs.readFile(path.join(downloadDir, 'copy.sql.gz'))).toEqual(dump)

    await cluster.psql('CREATE DATABASE restored')
    await exec('bash', ['-o', 'pipefail', '-c', `gunzip -c ${path.join(downloadDir, 'copy.sql.gz')} | psql -X -q -v ON_ERROR_STOP=1 -d restored`], {
      env: {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password},
      maxBuffer: 64 * 1024 * 1024,
    })
    expect(await fingerprint(cluster, 'restored')).toEqual(await fingerprint(cluster, 'shop'))
    await fs.rm(downloadDir, {recursive: true, force: true})
  })

  it('gives two backups in the same second distinct ids, both listed', async () => {
    const [first, second] = await Promise.all([
      runCli(['backup', 'run', '--json', '--no-prune'], env),
      runCli(['backup', 'run', '--json', '--no-prune'], env),
    ])
    const outcomes = [first, second].filter((result) => result.code === 0).map((result) => JSON.parse(result.stdout).metadata.id)
    // Racing processes may both pick the same id; the local backend then refuses the second
    // rather than overwrite the first. Either way no backup is lost or replaced.
    for (const result of [first, second]) if (result.code !== 0) expect(result.stderr).toMatch(/already exists/)
    expect(new Set(outcomes).size).toBe(outcomes.length)
    const again = await runCli(['backup', 'run', '--json', '--no-prune'], env)
    const listed = JSON.parse((await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: backupDir})).stdout).map((b: {id: string}) => b.id)
    expect(listed).toEqual(expect.arrayContaining([...outcomes, JSON.parse(again.stdout).metadata.id]))
  })

  it('takes the password from a pgpass file (PGPASSFILE) when DB_PASSWORD and PGPASSWORD are unset', async () => {
    const passfile = path.join(backupDir, '..', `pgpass-${Date.now()}`)
    await fs.writeFile(passfile, `127.0.0.1:${cluster.port}:*:${cluster.user}:${cluster.password}\n`, {mode: 0o600})
    try {
      const {DB_PASSWORD: _omitted, ...withoutPassword} = env
      const result = await runCli(['backup', 'run', '--json', '--no-prune'], {...withoutPassword, PGPASSFILE: passfile})
      expect(result.code).toBe(0)
      expect(JSON.parse(result.stdout).metadata.database).toBe('shop')
    } finally {
      await fs.rm(passfile, {force: true})
    }
  })
})
