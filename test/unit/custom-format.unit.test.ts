import {mkdir, mkdtemp, readdir, rm, utimes} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {basename, join} from 'node:path'

import {isBackupId, newBackupId, parseBackupId} from '../../src/backup/naming'
import {pgDumpArgs} from '../../src/backup/run-backup'
import {ORPHANED_AFTER_MS, ownerTag} from '../../src/leftover-owner'
import {pidScope} from '../../src/process-alive'
import {archiveOptionsProblem, makeRestoreTempDir, parseArchiveList, pgRestoreArgs, requirePgRestoreFor, sweepDeadRestoreDirs} from '../../src/restore/archive'

describe('custom format ids (BACKUP_FORMAT=custom)', () => {
  it('.dump.gz and .dump.zst are backup ids of kind dump next to .sql and .tar', async () => {
    expect(parseBackupId('backup_20261121T030000Z.dump.gz')).toMatchObject({kind: 'dump', codec: 'gzip'})
    expect(parseBackupId('app_-61_20261121T030000Z-2.dump.zst')).toMatchObject({kind: 'dump', codec: 'zstd', sequence: 2})
    expect(isBackupId('backup_20261121T030000Z.dump')).toBe(false)
    expect(isBackupId('backup_20261121T030000Z.dmp.gz')).toBe(false)
    expect(await newBackupId('backup', new Date('2026-11-21T03:00:00Z'), async () => false, 'dump', 'zstd')).toBe('backup_20261121T030000Z.dump.zst')
  })

  it('pg_dump writes the custom archive uncompressed (dbb compresses it)', () => {
    expect(pgDumpArgs(false, 'custom')).toEqual(['--format=custom', '--compress=0'])
    expect(pgDumpArgs(true, 'custom')).toEqual(['--no-owner', '--no-privileges', '--format=custom', '--compress=0'])
    expect(pgDumpArgs(false)).toEqual(['--format=plain'])
  })
})

describe('pg_restore options', () => {
  const custom = {id: 'b_20261121T030000Z.dump.gz', format: 'custom'}
  const plain = {id: 'b_20261121T030000Z.sql.gz', format: 'plain'}

  it('--jobs/--table/--schema need a custom backup; --table/--schema only into a database that does not exist', () => {
    expect(archiveOptionsProblem(plain, {}, {name: 'app', exists: true})).toBeUndefined()
    expect(archiveOptionsProblem(plain, {jobs: 1}, {name: 'app', exists: true})).toBeUndefined()
    expect(archiveOptionsProblem(plain, {jobs: 4}, {name: 'app', exists: true})).toMatch(/^--jobs need a custom-format backup \(BACKUP_FORMAT=custom/)
    expect(archiveOptionsProblem(plain, {tables: ['t'], schemas: ['s']}, {name: 'new', exists: false})).toMatch(/^--table, --schema need a custom-format backup/)
    expect(archiveOptionsProblem(custom, {jobs: 4}, {name: 'app', exists: true})).toBeUndefined()
    expect(archiveOptionsProblem(custom, {tables: ['t']}, {name: 'new', exists: false})).toBeUndefined()
    expect(archiveOptionsProblem(custom, {schemas: ['s']}, {name: 'app', exists: true})).toMatch(/database "app" exists and would be replaced by that part/)
  })

  it('connects by conninfo (a database name is never parsed as one) and drops owners for no-owner backups', () => {
    expect(pgRestoreArgs({privileges: undefined}, "we'ird db", {jobs: 3, tables: ['a b'], file: '/tmp/x/archive.dump'})).toEqual([
      '--no-password',
      '--exit-on-error',
      '--table=a b',
      '--jobs=3',
      "--dbname=dbname='we\\'ird db'",
      '/tmp/x/archive.dump',
    ])
    const noOwner = {privileges: {ownersAndPrivileges: false, referencedRoles: [], securityDefinerFunctions: []}}
    expect(pgRestoreArgs(noOwner as never, 'app')).toEqual(['--no-password', '--exit-on-error', '--no-owner', '--no-privileges', "--dbname=dbname='app'"])
  })
})

describe('requirePgRestoreFor (the local pg_restore, 15 here)', () => {
  it('refuses an archive written by a newer pg_dump, naming what to install; accepts its own and older majors', async () => {
    await expect(requirePgRestoreFor({id: 'b_20261121T030000Z.dump.gz', pgDumpVersion: '99.1'})).rejects.toThrow(
      /written by pg_dump 99\.1, and the local pg_restore is 15\.\d+, which cannot read it: install the PostgreSQL 99 client tools/,
    )
    await expect(requirePgRestoreFor({id: 'b_20261121T030000Z.dump.gz', pgDumpVersion: '15.18'})).resolves.toMatch(/^15\./)
    await expect(requirePgRestoreFor({id: 'b_20261121T030000Z.dump.gz', pgDumpVersion: '12.4'})).resolves.toMatch(/^15\./)
  })
})

describe('parseArchiveList', () => {
  const listing = [
    ';',
    '; Archive created at 2026-12-03 02:10:11 UTC',
    ';     dbname: shop',
    ';     TOC Entries: 9',
    ';     Format: CUSTOM',
    ';     Dumped from database version: 15.18 (Debian 15.18-0+deb12u1)',
    ';',
    '; Selected TOC Entries:',
    ';',
    '6; 2615 16409 SCHEMA - Schéma ü postgres',
    '221; 1259 16411 TABLE Schéma ü Bestellungen 注文 postgres',
    '3384; 0 0 SEQUENCE OWNED BY Schéma ü Bestellungen 注文_id_seq postgres',
    '222; 1255 16423 FUNCTION public credit(integer) app_owner',
    '3383; 0 0 ACL public FUNCTION credit(n integer) app_owner',
    '3390; 0 16398 TABLE DATA public events postgres',
    '3200; 2613 16430 BLOB - 16430 postgres',
    '3100; 0 0 ENCODING - ENCODING ',
  ].join('\n')

  it('reads the header and each entry, schemas with spaces included', () => {
    const parsed = parseArchiveList(listing)
    expect(parsed.header).toMatchObject({dbname: 'shop', 'TOC Entries': '9', Format: 'CUSTOM'})
    const brief = parsed.entries.map(({dumpId, type, schema, name, owner}) => ({dumpId, type, schema, name, owner}))
    expect(brief).toEqual([
      {dumpId: 6, type: 'SCHEMA', schema: null, name: 'Schéma ü', owner: 'postgres'},
      {dumpId: 221, type: 'TABLE', schema: 'Schéma ü', name: 'Bestellungen 注文', owner: 'postgres'},
      {dumpId: 3384, type: 'SEQUENCE OWNED BY', schema: 'Schéma ü', name: 'Bestellungen 注文_id_seq', owner: 'postgres'},
      {dumpId: 222, type: 'FUNCTION', schema: 'public', name: 'credit(integer)', owner: 'app_owner'},
      {dumpId: 3383, type: 'ACL', schema: 'public', name: 'FUNCTION credit(n integer)', owner: 'app_owner'},
      {dumpId: 3390, type: 'TABLE DATA', schema: 'public', name: 'events', owner: 'postgres'},
      {dumpId: 3200, type: 'BLOB', schema: null, name: '16430', owner: 'postgres'},
      {dumpId: 3100, type: 'ENCODING', schema: null, name: 'ENCODING', owner: ''},
    ])
  })
})

describe('sweepDeadRestoreDirs', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'dbb-sweep-'))
  })
  afterEach(async () => rm(dir, {recursive: true, force: true}))

  it("removes a dead run's directory, never a live process's or anything else", async () => {
    // pid 2^22+1 is above Linux's pid_max limit: no such process.
    await mkdir(join(dir, 'dbb-restore-4194305-abc'))
    await mkdir(join(dir, `dbb-restore-${process.pid}-def`))
    await mkdir(join(dir, 'dbb-restore-1-ghi')) // init: alive (or not ours to signal)
    await mkdir(join(dir, 'other-4194305-x'))
    expect(await sweepDeadRestoreDirs(dir)).toEqual([join(dir, 'dbb-restore-4194305-abc')])
    expect((await readdir(dir)).sort()).toEqual(['dbb-restore-1-ghi', `dbb-restore-${process.pid}-def`, 'other-4194305-x'])
  })

  it("names its directories with its pid scope, and judges another scope's by their heartbeat, not by a pid it cannot see", async () => {
    const made = await makeRestoreTempDir()
    try {
      expect(basename(made)).toMatch(new RegExp(`^dbb-restore-${ownerTag().replace('.', '\\.')}-`))
      expect(pidScope()).toMatch(/^[0-9a-f]{8}\.\d+$/)
    } finally {
      await rm(made, {recursive: true})
    }

    const here = pidScope()!
    const elsewhere = '00000000.1'
    await mkdir(join(dir, `dbb-restore-4194305@${here}-dead`)) // this scope, no such process
    await mkdir(join(dir, `dbb-restore-4194305@${elsewhere}-fresh`)) // another scope, touched just now: a live restore there
    await mkdir(join(dir, `dbb-restore-4194305@${elsewhere}-stale`))
    await mkdir(join(dir, `dbb-restore-${process.pid}@${elsewhere}-alsostale`)) // our pid number, but not us
    const now = Date.now()
    const untouched = new Date(now - ORPHANED_AFTER_MS - 1000)
    await utimes(join(dir, `dbb-restore-4194305@${elsewhere}-stale`), untouched, untouched)
    await utimes(join(dir, `dbb-restore-${process.pid}@${elsewhere}-alsostale`), untouched, untouched)
    expect((await sweepDeadRestoreDirs(dir, now)).sort()).toEqual(
      [`dbb-restore-${process.pid}@${elsewhere}-alsostale`, `dbb-restore-4194305@${elsewhere}-stale`, `dbb-restore-4194305@${here}-dead`].map((name) => join(dir, name)).sort(),
    )
    expect(await readdir(dir)).toEqual([`dbb-restore-4194305@${elsewhere}-fresh`])
    // Just under the limit it is still in use.
    const recent = new Date(now - ORPHANED_AFTER_MS + 5000)
    await utimes(join(dir, `dbb-restore-4194305@${elsewhere}-fresh`), recent, recent)
    expect(await sweepDeadRestoreDirs(dir, now)).toEqual([])
  })
})
