import {createHash} from 'node:crypto'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'
import {gzipSync} from 'node:zlib'

/**
 * Writes a complete backup (gzip dump + matching sidecar) straight into a local backup directory,
 * as dbb would have, dated `createdAt`. For retention and download tests that need backups of
 * chosen ages without waiting days.
 */
export async function writeLocalBackup(
  dir: string,
  createdAt: Date,
  options: {prefix?: string; sql?: string; sequence?: number; id?: string; database?: string} = {},
): Promise<{id: string; sha256: string; sizeBytes: number}> {
  const stamp = createdAt.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z')
  const id = options.id ?? `${options.prefix ?? 'backup'}_${stamp}${options.sequence ? `-${options.sequence}` : ''}.sql.gz`
  const sql = options.sql ?? `-- backup taken ${createdAt.toISOString()}\nSELECT 1;\n`
  const dump = gzipSync(Buffer.from(sql))
  const sha256 = createHash('sha256').update(dump).digest('hex')
  await fs.writeFile(path.join(dir, id), dump)
  const metadata = {
    id,
    type: 'logical',
    createdAt: createdAt.toISOString(),
    sizeBytes: dump.length,
    sha256,
    uncompressedBytes: Buffer.byteLength(sql),
    durationMs: 10,
    triggeredBy: 'cli',
    database: options.database ?? 'app',
    pgVersion: '15.18',
    pgDumpVersion: '15.18',
    format: 'plain',
    compression: 'gzip',
  }
  await fs.writeFile(path.join(dir, `${id}.meta.json`), JSON.stringify(metadata, null, 2))
  await setAge(path.join(dir, id), createdAt)
  await setAge(path.join(dir, `${id}.meta.json`), createdAt)
  return {id, sha256, sizeBytes: dump.length}
}

export async function setAge(file: string, date: Date): Promise<void> {
  await fs.utimes(file, date, date)
}
