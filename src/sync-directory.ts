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
