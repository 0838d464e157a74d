import {constants as fsConstants} from 'node:fs'
import * as fs from 'node:fs/promises'

/** fsyncs a directory, so the renames and removals in it survive a power loss. */
export async function syncDirectory(directory: string): Promise<void> {
  const handle = await fs.open(directory, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/**
 * Copies `source` to `destination` whole and fsynced: into `partial` first (a clone or
 * copy_file_range where the filesystem offers one), fsynced, then renamed over `destination`, so
 * `destination` is never seen half-written; on failure `partial` is removed. The fsync of the
 * directory (the rename surviving a power loss) is the caller's to decide: the WAL spool needs it,
 * a prefetch queue (trusted by no prefetcher after a restart) does not.
 */
export async function copyFileWhole(source: string, partial: string, destination: string): Promise<void> {
  try {
    await fs.copyFile(source, partial, fsConstants.COPYFILE_FICLONE)
    const handle = await fs.open(partial, 'r+')
    try {
      await handle.sync()
    } finally {
      await handle.close()
    }

    await fs.rename(partial, destination)
  } catch (error) {
    await fs.rm(partial, {force: true})
    throw error
  }
}
