import {z} from 'zod'

import {defineSection, intInRange} from './fields'

/** Asynchronous WAL archiving (`dbb wal push --async`, src/wal/spool.ts) and restore prefetch. */
export const walAsync = defineSection(
  {
    WAL_SPOOL_DIR: z.string().optional(),
    // 64 segments of 16 MiB: 1 GiB of WAL may wait for storage before pushes start failing.
    WAL_SPOOL_MAX_SEGMENTS: intInRange(1, 1_000_000).default(64),
    WAL_ASYNC_PARALLEL: intInRange(1, 64).default(4),
    WAL_PREFETCH: intInRange(0, 256).default(8),
  },
  (object) =>
    object.transform((data) => ({spoolDir: data.WAL_SPOOL_DIR, maxSegments: data.WAL_SPOOL_MAX_SEGMENTS, parallel: data.WAL_ASYNC_PARALLEL, prefetch: data.WAL_PREFETCH})),
)
