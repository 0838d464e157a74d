import {processStartTime} from '../../src/process-alive'
import {isThisProcess} from '../../src/wal/spool'

// A lock names this process only by pid AND start time: in another pid namespace (a sidecar's
// serve, a detached uploader a push started) a different process has the same pid, often 1. The
// uploader's lost()/release() and the prefetcher's publication of its queue decide by this.
describe('isThisProcess', () => {
  const ownStart = processStartTime(process.pid)

  it('is true for a lock with this pid and this start time', () => {
    expect(ownStart).toBeTruthy()
    expect(isThisProcess({pid: process.pid, readAheadDir: '', startTime: ownStart})).toBe(true)
  })

  it("is false for this pid with another start time (another namespace's process, or this pid's earlier holder)", () => {
    expect(isThisProcess({pid: process.pid, readAheadDir: '', startTime: `${Number(ownStart) + 1}`})).toBe(false)
    expect(isThisProcess({pid: process.pid, readAheadDir: ''})).toBe(false)
  })

  it('is false for another pid, and for no lock', () => {
    expect(isThisProcess({pid: process.pid + 1, readAheadDir: '', startTime: ownStart})).toBe(false)
    expect(isThisProcess(undefined)).toBe(false)
  })
})
