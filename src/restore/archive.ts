import {mkdtemp, readdir, rm, stat} from 'node:fs/promises'
import {tmpdir} from 'node:os'
import {join} from 'node:path'

import {toolVersion} from '../backup/child-process'
import type {BackupMetadata} from '../backup/metadata'
import {majorVersion} from '../db/client-version'
import {OperationError, UsageError} from '../errors'
import {OWNER_TAG_PATTERN, ownerFromTag, ownerGone, ownerTag} from '../leftover-owner'

/**
 * Restoring custom-format archives (BACKUP_FORMAT=custom, issue 20 item 3) with pg_restore: its
 * arguments, the version check, the private temporary directory `--jobs` needs, and parsing
 * `pg_restore --list`. The flow around it (staging database, verify, swap) is the plain dump's.
 */

/** pg_restore's options a user may choose; only for custom-format backups (archiveOptionsProblem). */
export interface ArchiveRestoreOptions {
  /** `pg_restore --jobs N`: parallel, from a temporary file (a seekable file is what it needs). */
  jobs?: number
  /** `pg_restore --table NAME` (repeatable): only these tables (definition and data). */
  tables?: string[]
  /** `pg_restore --schema NAME` (repeatable): only objects in these schemas. */
  schemas?: string[]
}

export function isSelective(options: ArchiveRestoreOptions | undefined): boolean {
  return (options?.tables?.length ?? 0) > 0 || (options?.schemas?.length ?? 0) > 0
}

/**
 * Why these options cannot be used for this backup into this target, or undefined. Selective
 * restore goes only into a database that does not exist yet: swapped over an existing one it
 * would replace a whole database with a part of one.
 */
export function archiveOptionsProblem(backup: Pick<BackupMetadata, 'id' | 'format'>, options: ArchiveRestoreOptions | undefined, target: {name: string; exists: boolean}): string | undefined {
  const used = [(options?.jobs ?? 1) > 1 ? '--jobs' : '', options?.tables?.length ? '--table' : '', options?.schemas?.length ? '--schema' : ''].filter(Boolean)
  if (used.length === 0) return undefined
  if (backup.format !== 'custom') {
    return `${used.join(', ')} need a custom-format backup (BACKUP_FORMAT=custom, ids ending in .dump.gz or .dump.zst); ${backup.id} is a ${backup.format} SQL dump, restored by psql as a whole`
  }

  if (isSelective(options) && target.exists) {
    return `--table/--schema restore a part of ${backup.id}; database "${target.name}" exists and would be replaced by that part: restore into a new database (--target-db NEWDB) and copy what you need from there`
  }

  return undefined
}

/** Throws the UsageError (exit 2) archiveOptionsProblem describes. */
export function requireArchiveOptions(...args: Parameters<typeof archiveOptionsProblem>): void {
  const problem = archiveOptionsProblem(...args)
  if (problem) throw new UsageError(problem)
}

/**
 * `pg_restore` into `database` (a conninfo string, so no database name is ever taken for one);
 * host, port, user and password come from the libpq environment like psql's.
 * `--exit-on-error` is psql's ON_ERROR_STOP. An archive taken with BACKUP_NO_OWNER still carries
 * owners and grants (pg_dump keeps them in archives): they are dropped here, as a plain dump of
 * that backup never had them. The archive is read from stdin unless `file` is given.
 */
export function pgRestoreArgs(backup: Pick<BackupMetadata, 'privileges'>, database: string, options: ArchiveRestoreOptions & {file?: string} = {}): string[] {
  const noOwner = backup.privileges?.ownersAndPrivileges === false ? ['--no-owner', '--no-privileges'] : []
  return [
    '--no-password',
    '--exit-on-error',
    ...noOwner,
    ...(options.tables ?? []).map((table) => `--table=${table}`),
    ...(options.schemas ?? []).map((schema) => `--schema=${schema}`),
    ...((options.jobs ?? 1) > 1 ? [`--jobs=${options.jobs}`] : []),
    `--dbname=dbname=${conninfoValue(database)}`,
    ...(options.file === undefined ? [] : [options.file]),
  ]
}

/** A libpq conninfo value: single-quoted, with `\` and `'` escaped. */
export function conninfoValue(value: string): string {
  return `'${value.replaceAll('\\', '\\\\').replaceAll("'", "\\'")}'`
}

/**
 * pg_restore reads archives of its own major version and older ones only ("unsupported version
 * in file header"): checked before anything is touched, naming what to install. Returns the
 * local pg_restore's version.
 */
export async function requirePgRestoreFor(backup: Pick<BackupMetadata, 'id' | 'pgDumpVersion'>): Promise<string> {
  const pgRestoreVersion = await toolVersion('pg_restore')
  const reader = majorVersion(pgRestoreVersion)
  const writer = backup.pgDumpVersion === undefined ? undefined : majorVersion(backup.pgDumpVersion)
  if (reader === undefined || writer === undefined || writer <= reader) return pgRestoreVersion
  throw new OperationError(
    `${backup.id} is a custom-format archive written by pg_dump ${backup.pgDumpVersion}, and the local pg_restore is ${pgRestoreVersion}, which cannot read it: ` +
      `install the PostgreSQL ${writer} client tools (or newer) and run the restore again`,
  )
}

// ---- the temporary file of a parallel restore

const TEMP_DIR_PREFIX = 'dbb-restore-'
const TEMP_DIR_NAME = new RegExp(`^${TEMP_DIR_PREFIX}${OWNER_TAG_PATTERN}-`)

/**
 * A new directory for one parallel restore's archive: mode 0700 (mkdtemp's), under TMPDIR, named
 * with this process's pid and pid scope (`dbb-restore-<pid>@<scope>-XXXXXX`) so the next restore
 * can tell a dead run's leftover (sweepDeadRestoreDirs). The caller keeps it touched while it
 * works (leftover-owner.ts, keepTouched): that is what a restore in another container sharing
 * TMPDIR goes by.
 */
export async function makeRestoreTempDir(directory = tmpdir()): Promise<string> {
  return mkdtemp(join(directory, `${TEMP_DIR_PREFIX}${ownerTag()}-`))
}

/**
 * Removes what parallel restores killed with SIGKILL left in TMPDIR (their process provably gone,
 * leftover-owner.ts; the directory this user's): a SIGKILL cannot be caught, so the next restore
 * cleans up after it. Returns the directories removed.
 */
export async function sweepDeadRestoreDirs(directory = tmpdir(), now = Date.now()): Promise<string[]> {
  const removed: string[] = []
  const entries = await readdir(directory).catch(() => [] as string[])
  for (const name of entries) {
    const match = TEMP_DIR_NAME.exec(name)
    if (!match) continue
    const path = join(directory, name)
    const info = await stat(path).catch(() => undefined)
    if (!info?.isDirectory() || (process.getuid && info.uid !== process.getuid())) continue
    if (!ownerGone(ownerFromTag(match[1], match[2]), info.mtime, now)) continue
    await rm(path, {recursive: true, force: true}).then(
      () => removed.push(path),
      () => {},
    )
  }

  return removed
}

// ---- pg_restore --list

export interface ArchiveEntry {
  /** pg_restore's dump id: `pg_restore --use-list` lines refer to it. */
  dumpId: number
  tableOid: number
  oid: number
  /** `TABLE`, `TABLE DATA`, `INDEX`, `FK CONSTRAINT`, `ACL`, … */
  type: string
  /** Null for objects outside a schema (`-` in the listing). */
  schema: string | null
  name: string
  owner: string
  /** The listing's line as pg_restore printed it. */
  line: string
}

export interface ArchiveListing {
  /** The `;`-comment header: archive created at, dbname, TOC entries, format, dumped from/by versions. */
  header: Record<string, string>
  entries: ArchiveEntry[]
}

/** pg_dump's entry types of more than one word, longest first (the rest of a line is schema, name, owner). */
const MULTI_WORD_TYPES = [
  'PUBLICATION TABLES IN SCHEMA',
  'MATERIALIZED VIEW DATA',
  'TEXT SEARCH CONFIGURATION',
  'TEXT SEARCH DICTIONARY',
  'TEXT SEARCH TEMPLATE',
  'TEXT SEARCH PARSER',
  'FOREIGN DATA WRAPPER',
  'DATABASE PROPERTIES',
  'PROCEDURAL LANGUAGE',
  'PUBLICATION TABLE',
  'SEQUENCE OWNED BY',
  'MATERIALIZED VIEW',
  'CHECK CONSTRAINT',
  'OPERATOR FAMILY',
  'OPERATOR CLASS',
  'ACCESS METHOD',
  'EVENT TRIGGER',
  'FK CONSTRAINT',
  'FOREIGN TABLE',
  'DEFAULT ACL',
  'LARGE OBJECT',
  'ROW SECURITY',
  'SEQUENCE SET',
  'TABLE ATTACH',
  'INDEX ATTACH',
  'USER MAPPING',
  'SHELL TYPE',
  'TABLE DATA',
  'BLOB METADATA',
]

/**
 * Parses `pg_restore --list` output: `215; 1259 16385 TABLE public accounts app` per entry. The
 * line does not quote names, so a schema with a space is found by the archive's own SCHEMA
 * entries (`SCHEMA - <name> <owner>`): the longest schema name the line continues with.
 */
export function parseArchiveList(text: string): ArchiveListing {
  const header: Record<string, string> = {}
  const lines: {line: string; dumpId: number; tableOid: number; oid: number; type: string; rest: string}[] = []
  for (const line of text.split('\n')) {
    if (line.startsWith(';')) {
      const field = /^;\s+([^:]+?):\s*(.*)$/.exec(line)
      if (field && !field[1].includes(';')) header[field[1].trim()] = field[2].trim()
      continue
    }

    const match = /^(\d+); (\d+) (\d+) (.*)$/.exec(line)
    if (!match) continue
    const type = MULTI_WORD_TYPES.find((candidate) => match[4].startsWith(`${candidate} `)) ?? match[4].split(' ')[0]
    lines.push({line, dumpId: Number(match[1]), tableOid: Number(match[2]), oid: Number(match[3]), type, rest: match[4].slice(type.length + 1)})
  }

  const schemas = new Set(['public', 'pg_catalog'])
  for (const entry of lines) if (entry.type === 'SCHEMA' && entry.rest.startsWith('- ')) schemas.add(withoutOwner(entry.rest.slice(2)).name)
  const byLength = [...schemas].sort((a, b) => b.length - a.length)
  const entries = lines.map(({line, dumpId, tableOid, oid, type, rest}): ArchiveEntry => {
    const schema = rest.startsWith('- ') ? '-' : (byLength.find((name) => rest.startsWith(`${name} `)) ?? rest.split(' ')[0])
    const {name, owner} = withoutOwner(rest.slice(schema.length + 1))
    return {dumpId, tableOid, oid, type, schema: schema === '-' ? null : schema, name, owner, line}
  })
  return {header, entries}
}

/** `<name> <owner>`: the owner is the last word (empty when the line ends with the space before it). */
function withoutOwner(text: string): {name: string; owner: string} {
  const space = text.lastIndexOf(' ')
  return space < 0 ? {name: text, owner: ''} : {name: text.slice(0, space), owner: text.slice(space + 1)}
}
