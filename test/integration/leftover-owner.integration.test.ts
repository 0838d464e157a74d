import {spawn} from 'node:child_process'
import * as fs from 'node:fs/promises'
import * as path from 'node:path'

import {ORPHANED_AFTER_MS} from '../../src/leftover-owner'
import {makeRestoreTempDir, sweepDeadRestoreDirs} from '../../src/restore/archive'
import {collect, tempDir} from '../helpers/cli'

/**
 * A TMPDIR shared across pid namespaces, made for real: the sweeper runs in a new pid namespace
 * (`unshare --pid`, with a user namespace so no privilege is needed), where this jest process —
 * the owner of a live restore's directory — does not exist. What a sibling container sharing an
 * emptyDir sees. A pid-only sweep removed the live directory there; the scope and the heartbeat
 * (src/leftover-owner.ts) keep it.
 */
describe('restore temporary directories across pid namespaces', () => {
  const built = JSON.stringify(path.join(__dirname, '..', '..', 'dist', 'restore', 'archive.js'))

  /** sweepDeadRestoreDirs of the built CLI, run in a pid namespace of its own; returns what it removed and the pid it had there. */
  async function sweepFromAnotherNamespace(directory: string): Promise<{removed: string[]; pid: number}> {
    const script = `require(${built}).sweepDeadRestoreDirs(${JSON.stringify(directory)}).then((removed) => console.log(JSON.stringify({removed, pid: process.pid})))`
    const child = spawn('unshare', ['--user', '--map-root-user', '--pid', '--fork', '--mount-proc', process.execPath, '-e', script], {stdio: ['ignore', 'pipe', 'pipe']})
    const result = await collect(child)
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
    return JSON.parse(result.stdout) as {removed: string[]; pid: number}
  }

  it("a live restore's directory survives a sweep from another namespace; a dead one's goes once its heartbeat is older than ORPHANED_AFTER_MS", async () => {
    const tmp = await tempDir('dbb-ns-sweep-')
    const live = await makeRestoreTempDir(tmp)
    await fs.writeFile(path.join(live, 'archive.dump'), 'in use')

    // Over there this process's pid names nothing (or another process): only the heartbeat can say.
    const first = await sweepFromAnotherNamespace(tmp)
    expect(first.pid).toBeLessThan(10) // it really ran in a fresh pid namespace
    expect(first.removed).toEqual([])
    expect(await fs.readFile(path.join(live, 'archive.dump'), 'utf8')).toBe('in use')

    // This namespace's own sweep keeps it too: its owner (us) runs.
    expect(await sweepDeadRestoreDirs(tmp)).toEqual([])

    // The owner stopped touching it long ago (it was SIGKILLed): the other namespace may remove it.
    const untouched = new Date(Date.now() - ORPHANED_AFTER_MS - 60_000)
    await fs.utimes(live, untouched, untouched)
    const second = await sweepFromAnotherNamespace(tmp)
    expect(second.removed).toEqual([live])
    expect(await fs.readdir(tmp)).toEqual([])
    await fs.rm(tmp, {recursive: true})
  })
})
