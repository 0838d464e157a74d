import {
  MAX_ID_LENGTH,
  MAX_PREFIX_LENGTH,
  backupIdOfKey,
  databasePrefix,
  decodeDatabaseName,
  encodeDatabaseName,
  globalsPrefix,
  isBackupId,
  newBackupId,
  parseBackupId,
} from '../../src/backup/naming'

const NAMES = ['app', 'App', 'my_app', 'my-app', 'my app', 'café', 'cafe\u0301', 'データ', 'a"b', "o'reilly", '-', '_', 'x'.repeat(63), 'globals', '-globals', 'all', '🐘']

describe('database names in backup ids (DB_NAMES)', () => {
  it('encode reversibly, without "_", and differently for every name (case, "_" vs "-", Unicode normalisation forms)', () => {
    const encoded = NAMES.map(encodeDatabaseName)
    expect(new Set(encoded).size).toBe(NAMES.length)
    for (const [index, name] of NAMES.entries()) {
      expect(encoded[index]).not.toContain('_')
      expect(encoded[index]).toMatch(/^(?:[A-Za-z0-9]|-[0-9a-f]{2})+$/)
      expect(decodeDatabaseName(encoded[index])).toBe(name)
    }

    expect(encodeDatabaseName('my_app')).toBe('my-5fapp')
    expect(encodeDatabaseName('café')).toBe('caf-c3-a9')
    expect(encodeDatabaseName('app')).toBe('app')
  })

  it('decode refuses text no name encodes to (so "-globals" is never a database)', () => {
    for (const text of ['-globals', 'a-', 'a-5', 'a-5F', 'a_b', '', '-ff']) expect(decodeDatabaseName(text)).toBeUndefined()
  })

  it('make valid ids whose prefix names exactly one database, distinct from the globals and from DB_NAME-only ids', async () => {
    const now = new Date('2026-11-21T03:04:05Z')
    const ids = await Promise.all(NAMES.map((name) => newBackupId(databasePrefix('backup', name), now, async () => false)))
    for (const [index, id] of ids.entries()) {
      expect(isBackupId(id)).toBe(true)
      expect(backupIdOfKey(`${id}.meta.json.0a1b2c3d4e5f.partial`)).toBe(id)
      const prefix = parseBackupId(id)?.prefix as string
      expect(prefix).toBe(databasePrefix('backup', NAMES[index]))
      expect(decodeDatabaseName(prefix.slice('backup_'.length))).toBe(NAMES[index])
    }

    const globals = await newBackupId(globalsPrefix('backup'), now, async () => false)
    expect(globals).toBe('backup_-globals_20261121T030405Z.sql.gz')
    expect(isBackupId(globals)).toBe(true)
    expect(ids).not.toContain(globals)
    expect(ids).not.toContain('backup_20261121T030405Z.sql.gz')
  })

  it('the longest name fits an id; ids stay short enough for every temporary file name a backend derives (255 bytes)', async () => {
    const worst = databasePrefix('b', 'é'.repeat(26))
    expect(worst.length).toBeLessThanOrEqual(MAX_PREFIX_LENGTH)
    const id = await newBackupId(worst, new Date(), async () => false)
    expect(isBackupId(id)).toBe(true)
    expect(id.length).toBeLessThanOrEqual(MAX_ID_LENGTH)
    expect(Buffer.byteLength(`${id}.1122334455667788.partial.00ff00ff00ff.partial`)).toBeLessThanOrEqual(255)
    expect(isBackupId(`${'x'.repeat(MAX_PREFIX_LENGTH + 1)}_20261121T030405Z.sql.gz`)).toBe(false)
  })
})
