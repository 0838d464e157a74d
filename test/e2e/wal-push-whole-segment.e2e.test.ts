import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {runCli, tempDir} from '../helpers/cli'
import {PgCluster, makeServerOwnedDir, startPostgres} from '../helpers/postgres'
import {archivingSettings, switchWalAndWaitArchived} from '../helpers/wal'

/**
 * A segment is archived only whole: its long page header gives the server's segment size, and a
 * file of any other length when read (cut short, or rewritten while read) is refused — exit 1, so
 * PostgreSQL keeps the segment and retries — with nothing stored under any name. A real segment of a
 * real PostgreSQL, and a real local storage directory.
 */
describe('wal push stores only whole segments', () => {
  let cluster: PgCluster | undefined
  let sourceStore: string
  let workDir: string

  beforeAll(async () => {
    sourceStore = await makeServerOwnedDir('dbb-whole-segment-source-')
    workDir = await tempDir('dbb-whole-segment-work-')
    cluster = await startPostgres({settings: archivingSettings(sourceStore)})
  })

  afterAll(async () => {
    await cluster?.destroy()
    await fs.rm(sourceStore, {recursive: true, force: true})
    await fs.rm(workDir, {recursive: true, force: true})
  })

  it('a segment shorter or longer than its header says is refused and nothing is stored; the whole one is archived', async () => {
    await cluster!.psql('CREATE TABLE t AS SELECT g, md5(g::text) FROM generate_series(1, 20000) g')
    const name = await switchWalAndWaitArchived(cluster!, sourceStore)
    // The real segment's bytes, as the archive holds them.
    const whole = path.join(workDir, 'whole')
    expect((await runCli(['wal', 'fetch', name, whole], {BACKUP_LOCAL_DIR: sourceStore})).code).toBe(0)
    const bytes = await fs.readFile(whole)
    expect(bytes.length).toBe(Number(await cluster!.psql('SHOW wal_segment_size').then((size) => Number.parseInt(size, 10) * 1024 * 1024)))

    const store = await tempDir('dbb-whole-segment-store-')
    await fs.mkdir(path.join(workDir, 'pg_wal'))
    const push = () => runCli(['wal', 'push', `pg_wal/${name}`], {BACKUP_LOCAL_DIR: store}, {cwd: workDir})
    const archived = async () => (await fs.readdir(path.join(store, 'wal')).catch(() => [] as string[])).filter((entry) => entry.startsWith(name))
    try {
      for (const [label, content] of [
        ['cut short', bytes.subarray(0, bytes.length / 2)],
        ['one byte short', bytes.subarray(0, bytes.length - 1)],
        ['longer', Buffer.concat([bytes, Buffer.alloc(8192)])],
      ] as const) {
        await fs.writeFile(path.join(workDir, 'pg_wal', name), content)
        const refused = await push()
        expect([label, refused.code, refused.stderr]).toEqual([label, 1, expect.stringContaining(`was ${content.length} bytes when read, not the ${bytes.length} of a whole segment`)])
        expect([label, await archived()]).toEqual([label, []])
      }

      await fs.writeFile(path.join(workDir, 'pg_wal', name), bytes)
      expect((await push()).code).toBe(0)
      expect(await archived()).toEqual([`${name}.gz`])
      const back = path.join(workDir, 'back')
      expect((await runCli(['wal', 'fetch', name, back], {BACKUP_LOCAL_DIR: store})).code).toBe(0)
      expect((await fs.readFile(back)).equals(bytes)).toBe(true)
    } finally {
      await fs.rm(store, {recursive: true, force: true})
    }
  })
})
