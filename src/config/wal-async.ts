import {defineSection} from './fields'

/** Asynchronous WAL archiving (`dbb wal push --async`, src/wal/spool.ts) and restore prefetch. */
export const walAsync = defineSection(['WAL_SPOOL_DIR', 'WAL_SPOOL_MAX_SEGMENTS', 'WAL_ASYNC_PARALLEL', 'WAL_PREFETCH'], (object) =>
  object.transform((data) => ({spoolDir: data.WAL_SPOOL_DIR, maxSegments: data.WAL_SPOOL_MAX_SEGMENTS, parallel: data.WAL_ASYNC_PARALLEL, prefetch: data.WAL_PREFETCH})),
)
