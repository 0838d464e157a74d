import {z} from 'zod'

// The schema has its own module so that listing backups (which validates sidecars) does not load pg.

/**
 * What a restore of a logical backup must contain, recorded at backup time in the snapshot pg_dump
 * itself dumps (`pg_export_snapshot()` + `pg_dump --snapshot`), so the numbers are exactly the
 * dump's: every table pg_dump dumps rows of, with its exact row count (and, with
 * BACKUP_RECORD_CHECKSUMS, an order-independent checksum of its rows), every sequence's value, the
 * number of large objects. A restore drill (src/drill) captures the same from the restored
 * database and names each difference.
 *
 * Sequences are the exception to "exact": they are not transactional, so no snapshot freezes them.
 * pg_dump reads each one after this record was taken, so the restored value may be further along
 * than the recorded one (nextval ran meanwhile), never behind it: a drill fails only on "behind".
 */
export const tableRecordSchema = z.object({
  schema: z.string(),
  name: z.string(),
  rows: z.number().int().nonnegative(),
  /** sum of hashtextextended(row::text, 0) over the rows, as text; only with BACKUP_RECORD_CHECKSUMS. */
  checksum: z.string().optional(),
})
export type TableRecord = z.infer<typeof tableRecordSchema>

export const sequenceRecordSchema = z.object({
  schema: z.string(),
  name: z.string(),
  /** bigint as text (beyond 2^53 otherwise). */
  lastValue: z.string(),
  isCalled: z.boolean(),
  /** Sign of the increment: which way "behind" is. */
  ascending: z.boolean(),
})
export type SequenceRecord = z.infer<typeof sequenceRecordSchema>

export const contentsRecordSchema = z.looseObject({
  tables: z.array(tableRecordSchema),
  sequences: z.array(sequenceRecordSchema),
  largeObjects: z.number().int().nonnegative(),
  checksums: z.boolean(),
  /** How long counting took at backup time (the cost of the record). */
  captureMs: z.number().nonnegative().optional(),
})
export type ContentsRecord = z.infer<typeof contentsRecordSchema>
