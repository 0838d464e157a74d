import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gzipSync} from 'node:zlib'

import {BackupMetadata, scanBackups} from '../../src/backup/metadata'
import {INDEX_MIN_READS, SIDECAR_INDEX_KEY} from '../../src/backup/sidecar-index'
import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import type {StorageBackend} from '../../src/storage/contract'
import {tempDir} from '../helpers/cli'
import {setAge, writeLocalBackup} from '../helpers/fake-backups'

/** The real local backend, with every get() key recorded and put() optionally refused (read-only credentials). */
function recording(backend: StorageBackend, options: {readOnly?: boolean} = {}) {
  const gets: string[] = []
  const wrapped: StorageBackend = {
    name: backend.name,
    location: backend.location,
    put: (key, body, putOptions) => (options.readOnly ? Promise.reject(new Error('AccessDenied: read-only credentials')) : backend.put(key, body, putOptions)),
    get: (key, getOptions) => {
      gets.push(key)
      return backend.get(key, getOptions)
    },
    stat: (key) => backend.stat(key),
    list: (prefix, range) => backend.list(prefix, range),
    delete: (key) => backend.delete(key),
    health: () => backend.health(),
  }
  return {wrapped, gets}
}

const DAY = 86_400_000
const summary = (backups: BackupMetadata[]) => backups.map((backup) => `${backup.id} ${backup.database} ${backup.sizeBytes}`)

/**
 * The sidecar index is a cache, never a source of truth: with it, a scan of many backups is one
 * GET instead of one per sidecar, and whatever happens to it — stale, damaged, planted, unreadable,
 * unwritable, overwritten by another writer — the listing is exactly what reading every sidecar gives.
 */
describe('the sidecar index (local backend)', () => {
  const count = INDEX_MIN_READS + 8
  let dir: string
  let storage: StorageBackend
  let ids: string[]

  beforeEach(async () => {
    dir = await tempDir('dbb-sidecar-index-')
    storage = new LocalBackend(dir)
    ids = []
    for (let index = 0; index < count; index++) ids.push((await writeLocalBackup(dir, new Date(Date.UTC(2026, 10, 1) + index * DAY), {database: `db${index}`})).id)
  })

  afterEach(async () => {
    await fs.rm(dir, {recursive: true, force: true})
  })

  /** What the location holds, read sidecar by sidecar (no index). */
  async function truth(): Promise<string[]> {
    const copy = await tempDir('dbb-sidecar-index-truth-')
    try {
      await fs.cp(dir, copy, {recursive: true, preserveTimestamps: true})
      await fs.rm(path.join(copy, SIDECAR_INDEX_KEY), {recursive: true, force: true})
      return summary((await scanBackups(new LocalBackend(copy))).backups)
    } finally {
      await fs.rm(copy, {recursive: true, force: true})
    }
  }

  it('the first scan reads every sidecar and writes the index; the next reads the index alone, and lists the same', async () => {
    const first = recording(storage)
    const listed = summary((await scanBackups(first.wrapped)).backups)
    expect(listed).toHaveLength(count)
    expect(first.gets.filter((key) => key.endsWith('.meta.json'))).toHaveLength(count)
    expect((await fs.stat(path.join(dir, SIDECAR_INDEX_KEY))).isFile()).toBe(true)

    const second = recording(storage)
    expect(summary((await scanBackups(second.wrapped)).backups)).toEqual(listed)
    expect(second.gets).toEqual([SIDECAR_INDEX_KEY])
    expect(listed).toEqual(await truth())
  })

  it('a backup deleted since is not listed, a new one is read once, and a sidecar replaced by hand is read again', async () => {
    await scanBackups(storage)
    await fs.rm(path.join(dir, ids[3]))
    await fs.rm(path.join(dir, `${ids[3]}.meta.json`))
    const added = await writeLocalBackup(dir, new Date(Date.UTC(2026, 11, 20)), {database: 'added'})
    const replaced = path.join(dir, `${ids[5]}.meta.json`)
    const metadata = JSON.parse(await fs.readFile(replaced, 'utf8')) as Record<string, unknown>
    await fs.writeFile(replaced, JSON.stringify({...metadata, database: 'renamed by hand'}, null, 2))
    await setAge(replaced, new Date(Date.UTC(2026, 11, 21)))

    const scan = recording(storage)
    const listed = summary((await scanBackups(scan.wrapped)).backups)
    expect(listed).toEqual(await truth())
    expect(listed.some((line) => line.startsWith(ids[3]))).toBe(false)
    expect(listed).toContain(`${ids[5]} renamed by hand ${metadata.sizeBytes}`)
    expect(scan.gets.sort()).toEqual([SIDECAR_INDEX_KEY, `${added.id}.meta.json`, `${ids[5]}.meta.json`].sort())

    const after = recording(storage)
    expect(summary((await scanBackups(after.wrapped)).backups)).toEqual(listed)
    expect(after.gets).toEqual([SIDECAR_INDEX_KEY])
  })

  it('a damaged, foreign or unreadable index, and entries planted or tampered with, change no answer', async () => {
    const expected = await truth()
    const indexFile = path.join(dir, SIDECAR_INDEX_KEY)
    for (const damaged of [Buffer.from('not gzip at all'), gzipSync('{"version": 1, "sidecars": '), gzipSync(JSON.stringify({version: 99, sidecars: {}}))]) {
      await fs.writeFile(indexFile, damaged)
      const scan = recording(storage)
      expect(summary((await scanBackups(scan.wrapped)).backups)).toEqual(expected)
      expect(scan.gets.filter((key) => key.endsWith('.meta.json'))).toHaveLength(count)
    }

    // The last scan rewrote it; now plant an entry for a backup that does not exist, and tamper
    // with one whose listing it matches (another id, then a database no sidecar says).
    const index = JSON.parse((await import('node:zlib')).gunzipSync(await fs.readFile(indexFile)).toString('utf8')) as {sidecars: Record<string, {metadata: Record<string, unknown>}>}
    const planted = 'backup_20991231T000000Z.sql.gz'
    index.sidecars[`${planted}.meta.json`] = {...index.sidecars[`${ids[0]}.meta.json`], metadata: {...index.sidecars[`${ids[0]}.meta.json`].metadata, id: planted}}
    index.sidecars[`${ids[1]}.meta.json`].metadata = {...index.sidecars[`${ids[1]}.meta.json`].metadata, id: ids[2]}
    index.sidecars[`${ids[2]}.meta.json`].metadata = {...index.sidecars[`${ids[2]}.meta.json`].metadata, createdAt: 'yesterday'}
    await fs.writeFile(indexFile, gzipSync(JSON.stringify(index)))
    const tampered = recording(storage)
    expect(summary((await scanBackups(tampered.wrapped)).backups)).toEqual(expected)
    expect(tampered.gets.sort()).toEqual([SIDECAR_INDEX_KEY, `${ids[1]}.meta.json`, `${ids[2]}.meta.json`].sort())

    // Unreadable (EISDIR): a read error of the index is only a cache miss; the sidecars are read.
    await fs.rm(indexFile)
    await fs.mkdir(indexFile)
    const unreadable = recording(storage)
    expect(summary((await scanBackups(unreadable.wrapped)).backups)).toEqual(expected)
    expect(unreadable.gets.filter((key) => key.endsWith('.meta.json'))).toHaveLength(count)
  })

  it('read-only credentials: no index is written, and every scan lists everything by reading the sidecars', async () => {
    for (let attempt = 0; attempt < 2; attempt++) {
      const scan = recording(storage, {readOnly: true})
      expect(summary((await scanBackups(scan.wrapped)).backups)).toEqual(await truth())
      expect(scan.gets.filter((key) => key.endsWith('.meta.json'))).toHaveLength(count)
    }

    await expect(fs.access(path.join(dir, SIDECAR_INDEX_KEY))).rejects.toThrow()
  })

  it('two prefixes share one index: a scan of one keeps the entries of the other', async () => {
    for (let index = 0; index < count; index++) await writeLocalBackup(dir, new Date(Date.UTC(2026, 10, 1) + index * DAY), {prefix: 'other', database: `other${index}`})
    await scanBackups(storage, {prefix: 'backup'})
    await scanBackups(storage, {prefix: 'other'})
    for (const prefix of ['backup', 'other']) {
      const scan = recording(storage)
      expect((await scanBackups(scan.wrapped, {prefix})).backups).toHaveLength(count)
      expect(scan.gets).toEqual([SIDECAR_INDEX_KEY])
    }

    const whole = recording(storage)
    expect((await scanBackups(whole.wrapped)).backups).toHaveLength(2 * count)
    expect(whole.gets).toEqual([SIDECAR_INDEX_KEY])
  })

  it('the index and the range after wal/ are requested while the listing still pages; the answer is the same', async () => {
    await scanBackups(storage)
    const expected = await truth()
    // Each listed key takes a moment, as a page does on S3; events say what was asked when.
    const events: string[] = []
    const paced: StorageBackend = {
      ...storage,
      get: (key, getOptions) => {
        events.push(`get ${key}`)
        return storage.get(key, getOptions)
      },
      list: (prefix, range) =>
        (async function* () {
          const name = range?.startAfter === undefined ? 'before wal/' : 'after wal/'
          events.push(`list ${name}`)
          for await (const object of storage.list(prefix, range)) {
            await new Promise((resolve) => setTimeout(resolve, 1))
            yield object
          }

          events.push(`end ${name}`)
        })(),
    }
    expect(summary((await scanBackups(paced)).backups)).toEqual(expected)
    const at = (event: string) => events.indexOf(event)
    expect(at('list after wal/')).toBeLessThan(at('end before wal/'))
    expect(at(`get ${SIDECAR_INDEX_KEY}`)).toBeGreaterThan(-1)
    expect(at(`get ${SIDECAR_INDEX_KEY}`)).toBeLessThan(at('end before wal/'))
  })

  it('a listing that fails in either range, at its start or part way, fails the scan: never a shorter list, no rejection left unhandled', async () => {
    const unhandled: unknown[] = []
    const onUnhandled = (reason: unknown) => unhandled.push(reason)
    process.on('unhandledRejection', onUnhandled)
    try {
      for (const failing of ['before wal/', 'after wal/'] as const) {
        for (const after of [0, 5, count]) {
          const broken: StorageBackend = {
            ...storage,
            list: (prefix, range) =>
              (async function* () {
                const name = range?.startAfter === undefined ? 'before wal/' : 'after wal/'
                let listed = 0
                for await (const object of storage.list(prefix, range)) {
                  if (name === failing && listed++ === after) throw new Error(`ECONNRESET while listing ${name}`)
                  yield object
                }

                if (name === failing && listed <= after) throw new Error(`ECONNRESET while listing ${name}`)
              })(),
          }
          await expect(scanBackups(broken)).rejects.toThrow(`ECONNRESET while listing ${failing}`)
        }
      }

      await new Promise((resolve) => setImmediate(resolve))
      expect(unhandled).toEqual([])
    } finally {
      process.off('unhandledRejection', onUnhandled)
    }
  })

  it('below INDEX_MIN_READS sidecars the index is neither read nor written', async () => {
    const small = await tempDir('dbb-sidecar-index-small-')
    try {
      for (let index = 0; index < INDEX_MIN_READS - 1; index++) await writeLocalBackup(small, new Date(Date.UTC(2026, 10, 1) + index * DAY))
      const scan = recording(new LocalBackend(small))
      expect((await scanBackups(scan.wrapped)).backups).toHaveLength(INDEX_MIN_READS - 1)
      expect(scan.gets).not.toContain(SIDECAR_INDEX_KEY)
      expect((await fs.readdir(small)).filter((entry) => !entry.startsWith('backup_'))).toEqual([])
    } finally {
      await fs.rm(small, {recursive: true, force: true})
    }
  })
})
