import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gzipSync} from 'node:zlib'

/**
 * Writes a backup by hand into a local backup directory: a gzip of `sql` under `id` and a
 * sidecar whose size and sha256 match it, so dbb treats it as a complete, verified backup.
 * Lets tests restore SQL that dbb's own pipeline would never produce (e.g. failing half-way).
 */
export async function writeCraftedBackup(
  dir: string,
  sql: string,
  options: {id?: string; createdAt?: string; database?: string} = {},
): Promise<{id: string; sha256: string; sizeBytes: number}> {
  const id = options.id ?? 'backup_20260101T000000Z.sql.gz'
  const body = gzipSync(Buffer.from(sql))
  const sha256 = createHash('sha256').update(body).digest('hex')
  await fs.writeFile(path.join(dir, id), body)
  const metadata = {
    id,
    type: 'logical',
    createdAt: options.createdAt ?? '2026-01-01T00:00:00.000Z',
    sizeBytes: body.length,
    sha256,
    uncompressedBytes: Buffer.byteLength(sql),
    durationMs: 1,
    triggeredBy: 'cli',
    database: options.database ?? 'crafted',
    pgVersion: '15.0',
    format: 'plain',
    compression: 'gzip',
  }
  await fs.writeFile(path.join(dir, `${id}.meta.json`), JSON.stringify(metadata))
  return {id, sha256, sizeBytes: body.length}
}
