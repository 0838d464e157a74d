import {defineSection} from './fields'

/** Asynchronous WAL archiving (`dbb wal push --async`, src/wal/spool.ts) and restore prefetch. */
export const walAsync = defineSection(['WAL_SPOOL_DIR', 'WAL_SPOOL_MAX_SEGMENTS', 'WAL_ASYNC_PARALLEL', 'WAL_PREFETCH'], (object) =>
  object.transform((data) => ({spoolDir: data.WAL_SPOOL_DIR, maxSegments: data.WAL_SPOOL_MAX_SEGMENTS, parallel: data.WAL_ASYNC_PARALLEL, prefetch: data.WAL_PREFETCH})),
)

/** dbb serve's read-ahead of the server's pg_wal (src/wal/spool-service.ts): serve's alone, not a flag of wal push. */
export const walReadAhead = defineSection(['WAL_READ_AHEAD_DIR'], (object) => object.transform((data) => ({readAheadDir: data.WAL_READ_AHEAD_DIR})))
