import {type Client, type ClientBase, escapeIdentifier} from 'pg'
import type {ContentsRecord, SequenceRecord, TableRecord} from './contents-record-schema'

/**
 * Tables pg_dump writes rows of: ordinary tables (relkind r, the leaves of partitioned tables
 * included), outside the system schemas, not an extension's own (CREATE EXTENSION makes those).
 * Materialized views are left out: a restore refreshes them, so their rows are recomputed, not restored.
 */
const TABLES_SQL = `
SELECT n.nspname AS schema, c.relname AS name
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind = 'r'
  AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2`

const SEQUENCES_SQL = `
SELECT n.nspname AS schema, c.relname AS name, s.seqincrement > 0 AS ascending
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_sequence s ON s.seqrelid = c.oid
WHERE c.relkind = 'S'
  AND n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY 1, 2`

const qualified = (schema: string, name: string) => `${escapeIdentifier(schema)}.${escapeIdentifier(name)}`

/** Reads the record from the database `client` is connected to, in the client's current transaction (if any). */
export async function captureContents(client: ClientBase, options: {checksums: boolean}): Promise<ContentsRecord> {
  const started = Date.now()
  const tables: TableRecord[] = []
  for (const {schema, name} of (await client.query<{schema: string; name: string}>(TABLES_SQL)).rows) {
    const from = qualified(schema, name)
    // hashtextextended over the row's text form: order-independent, no sort, no memory per row.
    const sql = options.checksums
      ? `SELECT count(*)::text AS rows, coalesce(sum(hashtextextended(t::text, 0)), 0)::text AS checksum FROM ${from} t`
      : `SELECT count(*)::text AS rows FROM ${from}`
    const {rows} = await client.query<{rows: string; checksum?: string}>(sql)
    tables.push({schema, name, rows: Number(rows[0].rows), ...(options.checksums ? {checksum: rows[0].checksum} : {})})
  }

  const sequences: SequenceRecord[] = []
  for (const {schema, name, ascending} of (await client.query<{schema: string; name: string; ascending: boolean}>(SEQUENCES_SQL)).rows) {
    const {rows} = await client.query<{last_value: string; is_called: boolean}>(`SELECT last_value::text, is_called FROM ${qualified(schema, name)}`)
    sequences.push({schema, name, lastValue: rows[0].last_value, isCalled: rows[0].is_called, ascending})
  }

  const largeObjects = Number((await client.query<{count: string}>('SELECT count(*)::text AS count FROM pg_largeobject_metadata')).rows[0].count)
  return {tables, sequences, largeObjects, checksums: options.checksums, captureMs: Date.now() - started}
}

/**
 * The session that holds the exported snapshot: REPEATABLE READ, read-only, opened before pg_dump
 * starts and kept open (idle in transaction, which the server must not time out) until
 * `release()`, after pg_dump has exited — pg_dump imports the snapshot when it connects, and the
 * exporting transaction must still be open then. `capture()` counts in that snapshot, while
 * pg_dump dumps it: the counts are the dump's, whatever commits meanwhile.
 */
export interface DumpSnapshot {
  id: string
  /** The exporting session's backend pid: a count waiting on a lock ends only when the server ends it. */
  pid: number
  capture(options: {checksums: boolean}): Promise<ContentsRecord>
  release(): Promise<void>
}

export async function exportSnapshot(client: Client): Promise<DumpSnapshot> {
  client.on('error', () => {})
  try {
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
    // One round trip for the session's settings (the simple protocol runs them in order):
    //  - no timeouts: the session idles in its transaction until pg_dump is done;
    //  - no parallel workers for the counts: they run beside pg_dump, which dumps each table with
    //    one process, and a Gather's workers take the cores pg_dump and the compressor need. Measured
    //    on the benchmark database (2 cores, 0.85 s `pg_dump | zstd`): counting beside it added
    //    0.20 s with the server's default of 2 workers and 0.10 s without (BENCHMARKS.md, session 8);
    //  - named apart from pg_dump's own session (both are dbb's), for operators reading pg_stat_activity.
    await client.query(
      [
        'SET LOCAL idle_in_transaction_session_timeout = 0',
        'SET LOCAL statement_timeout = 0',
        'SET LOCAL max_parallel_workers_per_gather = 0',
        "SET LOCAL application_name = 'dbb contents record'",
      ].join('; '),
    )
    const {rows} = await client.query<{snapshot: string; pid: number}>('SELECT pg_export_snapshot() AS snapshot, pg_backend_pid() AS pid')
    let released: Promise<void> | undefined
    return {
      id: rows[0].snapshot,
      pid: rows[0].pid,
      capture: (options) => captureContents(client, options),
      release() {
        // end() also stops a count still running (an aborted backup).
        released ??= client.end().catch(() => {})
        return released
      },
    }
  } catch (error) {
    await client.end().catch(() => {})
    throw error
  }
}

/** One difference between a record and a restored database, naming the object. */
export interface ContentsDifference {
  kind: 'table' | 'sequence' | 'largeObjects'
  /** `schema.name` (quoted as SQL where needed), or "large objects". */
  object: string
  expected: string
  actual: string
}

const display = (schema: string, name: string) => qualified(schema, name).replace(/"([a-z_][a-z0-9_]*)"/g, '$1')

/** Every difference between what the backup recorded and what the restored database holds. */
export function compareContents(expected: ContentsRecord, actual: ContentsRecord): ContentsDifference[] {
  const differences: ContentsDifference[] = []
  const key = (item: {schema: string; name: string}) => `${item.schema}\0${item.name}`
  const restoredTables = new Map(actual.tables.map((table) => [key(table), table]))
  for (const table of expected.tables) {
    const object = display(table.schema, table.name)
    const restored = restoredTables.get(key(table))
    if (!restored) differences.push({kind: 'table', object, expected: `${table.rows} rows`, actual: 'missing'})
    else if (restored.rows !== table.rows) differences.push({kind: 'table', object, expected: `${table.rows} rows`, actual: `${restored.rows} rows`})
    else if (expected.checksums && actual.checksums && table.checksum !== restored.checksum) {
      differences.push({kind: 'table', object, expected: `checksum ${table.checksum}`, actual: `checksum ${restored.checksum}`})
    }

    restoredTables.delete(key(table))
  }

  for (const extra of restoredTables.values()) {
    differences.push({kind: 'table', object: display(extra.schema, extra.name), expected: 'absent', actual: `${extra.rows} rows`})
  }

  const restoredSequences = new Map(actual.sequences.map((sequence) => [key(sequence), sequence]))
  for (const sequence of expected.sequences) {
    const object = display(sequence.schema, sequence.name)
    const restored = restoredSequences.get(key(sequence))
    const describe = (s: SequenceRecord) => `${s.lastValue}${s.isCalled ? '' : ' (not called)'}`
    if (!restored) differences.push({kind: 'sequence', object, expected: describe(sequence), actual: 'missing'})
    else if (sequenceBehind(sequence, restored)) differences.push({kind: 'sequence', object, expected: `at least ${describe(sequence)}`, actual: describe(restored)})
  }

  if (expected.largeObjects !== actual.largeObjects) {
    differences.push({kind: 'largeObjects', object: 'large objects', expected: String(expected.largeObjects), actual: String(actual.largeObjects)})
  }

  return differences
}

/** The restored sequence would hand out a value the source had already handed out. */
function sequenceBehind(recorded: SequenceRecord, restored: SequenceRecord): boolean {
  const position = (s: SequenceRecord) => BigInt(s.lastValue) * (recorded.ascending ? 1n : -1n) * 2n + (s.isCalled ? 1n : 0n)
  return position(restored) < position(recorded)
}
