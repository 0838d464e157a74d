import {execFile} from 'node:child_process'
import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {promisify} from 'node:util'

import {collect, runCli, startCli, tempDir} from '../helpers/cli'
import {PgCluster, holdTableLock, startPostgres} from '../helpers/postgres'
import {fingerprint, seedDatabase} from '../helpers/seed'

const exec = promisify(execFile)
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd])

describe('COMPRESSION=zstd: backup, list, download, restore, mixed with gzip (real PostgreSQL, local storage)', () => {
  let cluster: PgCluster
  let backupDir: string
  let env: Record<string, string>
  let pgEnv: NodeJS.ProcessEnv

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 20_000)
    backupDir = await tempDir()
    env = {...cluster.dbbEnv('shop'), BACKUP_LOCAL_DIR: backupDir}
    pgEnv = {...process.env, PGHOST: cluster.host, PGPORT: String(cluster.port), PGUSER: cluster.user, PGPASSWORD: cluster.password}
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(backupDir, {recursive: true, force: true})
  })

  const listIds = async () => JSON.parse((await runCli(['backup', 'list', '--json'], {BACKUP_LOCAL_DIR: backupDir})).stdout).map((b: {id: string}) => b.id)

  it('stores a .sql.zst dump (zstd frame, sidecar says zstd) that zstd -dc | psql restores to the same rows', async () => {
    const result = await runCli(['backup', 'run', '--json', '--no-prune'], {...env, COMPRESSION: 'zstd'})
    expect(result.stderr).not.toMatch(/"level":[56]0/)
    expect(result.code).toBe(0)
    const {metadata} = JSON.parse(result.stdout)
    expect(metadata.id).toMatch(/^backup_\d{8}T\d{6}Z(-\d+)?\.sql\.zst$/)
    expect(metadata).toMatchObject({type: 'logical', compression: 'zstd', format: 'plain'})
    const dump = await fs.readFile(path.join(backupDir, metadata.id))
    expect(dump.subarray(0, 4)).toEqual(ZSTD_MAGIC)
    expect(dump.length).toBe(metadata.sizeBytes)
    expect(createHash('sha256').update(dump).digest('hex')).toBe(metadata.sha256)

    // The dump's size, reported by the in-stream check (zstd -t), is what stock zstd decodes the stored file to.
    const {stdout: plain} = await exec('zstd', ['-dc', path.join(backupDir, metadata.id)], {encoding: 'buffer', maxBuffer: 64 * 1024 * 1024})
    expect(metadata.uncompressedBytes).toBe(plain.length)
    await cluster.psql('CREATE DATABASE from_stock_tools')
    await exec('bash', ['-o', 'pipefail', '-c', `zstd -dc ${path.join(backupDir, metadata.id)} | psql -X -q -v ON_ERROR_STOP=1 -d from_stock_tools`], {env: pgEnv, maxBuffer: 64 * 1024 * 1024})
    expect(await fingerprint(cluster, 'from_stock_tools')).toEqual(await fingerprint(cluster, 'shop'))
  })

  it('mixed archive: a gzip and a zstd backup list side by side; latest, download and dbb restore use each one\'s codec; prune keeps the newest', async () => {
    const gzip = await runCli(['backup', 'run', '--json', '--no-prune'], env)
    expect(gzip.code).toBe(0)
    const gzipId = JSON.parse(gzip.stdout).metadata.id
    expect(gzipId).toMatch(/\.sql\.gz$/)
    await new Promise((resolve) => setTimeout(resolve, 1100)) // a later second: "latest" is the zstd one
    const zstd = await runCli(['backup', 'run', '--json', '--no-prune'], {...env, COMPRESSION: 'ZSTD', COMPRESSION_LEVEL: '19'})
    expect(zstd.code).toBe(0)
    const zstdId = JSON.parse(zstd.stdout).metadata.id
    expect(zstdId).toMatch(/\.sql\.zst$/)
    expect(await listIds()).toEqual(expect.arrayContaining([gzipId, zstdId]))

    const latest = await runCli(['backup', 'download', 'latest', '--json', '-o', path.join(backupDir, '..', `${path.basename(backupDir)}-latest`)], {BACKUP_LOCAL_DIR: backupDir})
    expect(latest.code).toBe(0)
    expect(JSON.parse(latest.stdout).id).toBe(zstdId)
    await fs.rm(path.join(backupDir, '..', `${path.basename(backupDir)}-latest`), {force: true})

    const expected = await fingerprint(cluster, 'shop')
    for (const id of [gzipId, zstdId]) {
      await cluster.psql(`DELETE FROM customers WHERE id % 2 = 0`, 'shop')
      const restore = await runCli(['restore', id, '--force', '--json'], env)
      expect(restore.stderr).not.toMatch(/"level":[56]0/)
      expect(restore.code).toBe(0)
      expect(await fingerprint(cluster, 'shop')).toEqual(expected)
    }

    const pruned = await runCli(['prune', '--json'], {BACKUP_LOCAL_DIR: backupDir, BACKUPS_TO_RETAIN: '1', RETENTION_DAYS: '0'})
    expect(pruned.code).toBe(0)
    expect(await listIds()).toEqual([zstdId])
  })

  /** Starts a zstd backup whose pg_dump waits on a lock: dbb, pg_dump and the zstd program are all running. */
  async function backupInFlight(): Promise<{child: ReturnType<typeof startCli>; done: ReturnType<typeof collect>; release: () => Promise<void>; zstdPids: string[]}> {
    const release = await holdTableLock(cluster, 'shop', 'events')
    const child = startCli(['backup', 'run', '--no-prune'], {...env, COMPRESSION: 'zstd'})
    const done = collect(child)
    try {
      await waitFor(async () => (await cluster.psql(`SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbb' AND wait_event_type = 'Lock'`)) === '1')
      const children = (await fs.readFile(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8')).trim().split(/\s+/)
      const zstdPids: string[] = []
      const commands: string[] = []
      for (const pid of children) {
        const command = (await fs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0')
        if (command[0] === 'zstd' || command[0] === 'wc') {
          zstdPids.push(pid)
          commands.push(command.join(' ').trim())
        }
      }

      // The compressor, and the in-stream check: `zstd -t`, which decodes everything and reports the size (no wc).
      expect(commands.sort()).toEqual([expect.stringMatching(/^zstd -q -c -1 /), expect.stringMatching(/^zstd -t /)])
      return {child, done, release, zstdPids}
    } catch (error) {
      child.kill('SIGKILL')
      await release()
      throw error
    }
  }

  it('pg_dump dying mid-backup: exit 1 naming pg_dump, the zstd program gone, nothing listed or left behind', async () => {
    const before = await listIds()
    const filesBefore = await fs.readdir(backupDir)
    const inFlight = await backupInFlight()
    try {
      await cluster.psql(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'dbb' AND wait_event_type = 'Lock'`)
      const result = await inFlight.done
      expect(result.code).toBe(1)
      expect(result.stderr).toMatch(/pg_dump failed/)
    } finally {
      await inFlight.release()
    }

    for (const pid of inFlight.zstdPids) await waitFor(async () => !(await processAlive(pid)))
    expect(await listIds()).toEqual(before)
    // The failed run removed its partial dump and its id claim: the directory is as it was.
    expect(await fs.readdir(backupDir)).toEqual(filesBefore)
  })

  it('SIGKILL of dbb mid-backup: nothing listed, the zstd program ends, and the next zstd backup succeeds', async () => {
    const before = await listIds()
    const inFlight = await backupInFlight()
    try {
      inFlight.child.kill('SIGKILL')
      await inFlight.done
    } finally {
      await inFlight.release()
    }

    // Their input closed with dbb: the compressor and the check's zstd -t end by themselves instead of lingering.
    for (const pid of inFlight.zstdPids) await waitFor(async () => !(await processAlive(pid)))
    expect(await listIds()).toEqual(before)
    const next = await runCli(['backup', 'run', '--json', '--no-prune'], {...env, COMPRESSION: 'zstd'})
    expect(next.code).toBe(0)
    expect(await listIds()).toEqual([JSON.parse(next.stdout).metadata.id, ...before])
  })

  // zstd's `-t` report is read for the dump's size; a zstd that words it otherwise (another version
  // than the tested 1.5.4) must not fail every backup: the probe finds it, and the check decodes
  // into `wc -c` instead. The recorded size is still what stock zstd decodes the stored file to.
  it("a zstd whose `-t` report is worded otherwise: the backup is stored and verified all the same, its size right, and it restores", async () => {
    const bin = await tempDir()
    await fs.writeFile(path.join(bin, 'zstd'), `#!/bin/bash\nexec ${execFileSyncWhich('zstd')} "$@" 2> >(sed 's/ bytes/ octets/' >&2)\n`, {mode: 0o755})
    const result = await runCli(['backup', 'run', '--json', '--no-prune'], {...env, COMPRESSION: 'zstd', PATH: `${bin}:${process.env.PATH}`})
    expect([result.code, result.code === 0 ? '' : result.stderr]).toEqual([0, ''])
    const {metadata} = JSON.parse(result.stdout)
    const {stdout: plain} = await exec('zstd', ['-dc', path.join(backupDir, metadata.id)], {encoding: 'buffer', maxBuffer: 64 * 1024 * 1024})
    expect(metadata.uncompressedBytes).toBe(plain.length)
    const restored = await runCli(['restore', metadata.id, '--target-db', 'from_reworded_zstd', '--force'], env)
    expect([restored.code, restored.code === 0 ? '' : restored.stderr]).toEqual([0, ''])
    expect(await fingerprint(cluster, 'from_reworded_zstd')).toEqual(await fingerprint(cluster, 'shop'))
    await fs.rm(bin, {recursive: true, force: true})
  })

  it('without the zstd program on PATH: exit 2 naming COMPRESSION and what to install, before anything is written', async () => {
    const bin = await tempDir()
    for (const tool of ['pg_dump', 'psql']) await fs.symlink(execFileSyncWhich(tool), path.join(bin, tool))
    const before = await fs.readdir(backupDir)
    const result = await runCli(['backup', 'run'], {...env, COMPRESSION: 'zstd', PATH: bin})
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(/COMPRESSION: zstd needs the zstd program on PATH to compress \(install it, e\.g\. apt-get install zstd\)/)
    expect(await fs.readdir(backupDir)).toEqual(before)
    await fs.rm(bin, {recursive: true, force: true})
  })

  it.each([
    [{COMPRESSION: 'lz4'}, /COMPRESSION: must be one of gzip, zstd/],
    [{COMPRESSION_LEVEL: '12'}, /COMPRESSION_LEVEL: must be from 1 to 9 with COMPRESSION=gzip, got 12/],
    [{COMPRESSION: 'zstd', COMPRESSION_LEVEL: '20'}, /COMPRESSION_LEVEL: must be from 1 to 19 with COMPRESSION=zstd, got 20/],
    [{COMPRESSION: 'zstd', COMPRESSION_LEVEL: 'fast'}, /COMPRESSION_LEVEL: must be a whole number \(1–9 for gzip, 1–19 for zstd\)/],
  ])('bad input %j: exit 2 naming the variable and the allowed values, nothing written', async (settings, message) => {
    const before = await fs.readdir(backupDir)
    const result = await runCli(['backup', 'run'], {...env, ...settings})
    expect(result.code).toBe(2)
    expect(result.stderr).toMatch(message)
    expect(await fs.readdir(backupDir)).toEqual(before)
  })
})

async function waitFor(condition: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await condition())) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** Alive and not a zombie waiting to be reaped. */
async function processAlive(pid: string): Promise<boolean> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8').catch(() => '')
  return status !== '' && !/^State:\s+Z/m.test(status)
}

function execFileSyncWhich(tool: string): string {
  return require('node:child_process').execFileSync('bash', ['-c', `command -v ${tool}`], {encoding: 'utf8'}).trim()
}
