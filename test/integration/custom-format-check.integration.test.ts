import {execFileSync} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'

import {spawnTool} from '../../src/backup/child-process'
import {withArchiveCheck} from '../../src/backup/custom-format'
import {tempDir} from '../helpers/cli'
import {PgCluster, startPostgres} from '../helpers/postgres'
import {seedDatabase} from '../helpers/seed'

/**
 * The custom format's in-stream "dump complete" proof (src/backup/custom-format.ts) against the
 * real pg_restore and a real archive: output passes through unchanged, and an archive that
 * pg_restore cannot read to its end (cut inside the data, not an archive) fails the wrapped
 * tool's exit status even though the producer exited 0.
 */
describe('withArchiveCheck (real pg_dump archive, real pg_restore)', () => {
  let cluster: PgCluster
  let dir: string
  let archive: string
  let size: number

  beforeAll(async () => {
    cluster = await startPostgres()
    await seedDatabase(cluster, 'shop', 20_000)
    dir = await tempDir()
    archive = path.join(dir, 'shop.dump')
    execFileSync('pg_dump', ['--format=custom', '--compress=0', '--file', archive, '-h', cluster.host, '-p', String(cluster.port), '-U', cluster.user, 'shop'], {
      env: {...process.env, PGPASSWORD: cluster.password},
    })
    size = (await fs.stat(archive)).size
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(dir, {recursive: true, force: true})
  })

  async function run(producer: string) {
    const tool = withArchiveCheck(spawnTool('bash', ['-c', producer], {}), new AbortController().signal)
    const chunks: Buffer[] = []
    await pipeline(tool.output!, new Writable({write: (chunk: Buffer, _encoding, callback) => (chunks.push(chunk), callback())}))
    return {status: await tool.exited, output: Buffer.concat(chunks), stderr: tool.stderr()}
  }

  it('a whole archive passes, byte for byte', async () => {
    const result = await run(`cat '${archive}'`)
    expect(result.status).toEqual({code: 0, signal: null})
    expect(result.output.equals(await fs.readFile(archive))).toBe(true)
  })

  it('an archive cut inside its data fails, in pg_restore\'s words, although the producer exited 0', async () => {
    const result = await run(`head -c ${Math.floor(size * 0.6)} '${archive}'`)
    expect(result.output.length).toBe(Math.floor(size * 0.6))
    expect(result.status.code).not.toBe(0)
    expect(result.stderr).toMatch(/^pg_restore could not read the archive pg_dump wrote: pg_restore: error: /)
  })

  it('what is not an archive fails', async () => {
    const result = await run(`printf 'PGDMP not really an archive'`)
    expect(result.status.code).not.toBe(0)
  })

  it("reports the producer's own failure first (the check is killed)", async () => {
    const result = await run(`head -c 1000 '${archive}'; echo 'pg_dump: error: connection lost' >&2; exit 1`)
    expect(result.status.code).toBe(1)
    expect(result.stderr).toContain('pg_dump: error: connection lost')
  })
})
