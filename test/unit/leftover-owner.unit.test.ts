import * as fs from 'node:fs/promises'
import * as os from 'node:os'
import * as path from 'node:path'

import {HEARTBEAT_INTERVAL_MS, ORPHANED_AFTER_MS, OWNER_TAG_PATTERN, keepTouched, ownerFromTag, ownerGone, ownerTag, thisOwner} from '../../src/leftover-owner'
import {pidScope} from '../../src/process-alive'

describe('leftover owners', () => {
  const NO_SUCH_PID = 4_194_305 // above Linux's pid_max limit
  const now = Date.now()
  const justNow = new Date(now)
  const longAgo = new Date(now - ORPHANED_AFTER_MS - 1)

  it('a tag names the pid and the scope, and reads back from a file name', () => {
    const tag = ownerTag()
    expect(tag).toBe(`${process.pid}@${pidScope()}`)
    const match = new RegExp(`^x-${OWNER_TAG_PATTERN}-y$`).exec(`x-${tag}-y`)
    expect(ownerFromTag(match![1], match![2])).toEqual(thisOwner())
    const legacy = new RegExp(`^x-${OWNER_TAG_PATTERN}-y$`).exec('x-1234-y')
    expect(ownerFromTag(legacy![1], legacy![2])).toEqual({pid: 1234, scope: undefined})
  })

  it('in this scope the pid decides, whatever the age; in another, only the heartbeat', () => {
    const here = pidScope()
    expect(ownerGone({pid: NO_SUCH_PID, scope: here}, justNow, now)).toBe(true)
    expect(ownerGone({pid: NO_SUCH_PID, scope: undefined}, justNow, now)).toBe(true) // an older dbb's record: the pid rule it was written for
    expect(ownerGone({pid: process.pid, scope: here}, longAgo, now)).toBe(false)
    expect(ownerGone({pid: 1, scope: here}, longAgo, now)).toBe(false)
    expect(ownerGone({pid: NO_SUCH_PID, scope: '00000000.1'}, justNow, now)).toBe(false)
    expect(ownerGone({pid: process.pid, scope: '00000000.1'}, justNow, now)).toBe(false)
    expect(ownerGone({pid: process.pid, scope: '00000000.1'}, longAgo, now)).toBe(true)
    expect(ownerGone({pid: Number.NaN, scope: here}, longAgo, now)).toBe(false) // not a record: never removed
  })

  it('keepTouched refreshes the modification time every interval until stopped', async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'dbb-touch-'))
    jest.useFakeTimers({doNotFake: ['setImmediate', 'nextTick', 'queueMicrotask', 'Date', 'setTimeout', 'clearTimeout']})
    try {
      await fs.utimes(dir, longAgo, longAgo)
      const stop = keepTouched(dir)
      jest.advanceTimersByTime(HEARTBEAT_INTERVAL_MS - 1)
      await new Promise((resolve) => setTimeout(resolve, 50))
      expect((await fs.stat(dir)).mtimeMs).toBe(longAgo.getTime())
      jest.advanceTimersByTime(1)
      const touched = async () => (await fs.stat(dir)).mtimeMs
      for (let waited = 0; (await touched()) === longAgo.getTime() && waited < 2000; waited += 20) await new Promise((resolve) => setTimeout(resolve, 20))
      expect(await touched()).toBeGreaterThanOrEqual(now - 1000)
      expect(ownerGone({pid: process.pid, scope: '00000000.1'}, (await fs.stat(dir)).mtime)).toBe(false)

      stop()
      await fs.utimes(dir, longAgo, longAgo)
      jest.advanceTimersByTime(3 * HEARTBEAT_INTERVAL_MS)
      await new Promise((resolve) => setTimeout(resolve, 50))
      expect((await fs.stat(dir)).mtimeMs).toBe(longAgo.getTime())
    } finally {
      jest.useRealTimers()
      await fs.rm(dir, {recursive: true, force: true})
    }
  })
})
