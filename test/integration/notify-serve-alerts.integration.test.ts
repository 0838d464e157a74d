import * as fs from 'node:fs/promises'

import {loadConfig} from '../../src/config'
import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import {ArchivingService, startArchivingService} from '../../src/wal/sidecar-archiving'
import {runCli, tempDir} from '../helpers/cli'
import {segmentName, writeSourceSegment} from '../helpers/crash-invariants'
import {startReceiver} from '../helpers/notify-receivers'
import {FakeClock, captureLogger, waitFor} from '../helpers/serve'

/**
 * dbb serve's scheduled checks against real local storage and a real webhook receiver: a stalled
 * WAL archive is told once, reminded after NOTIFY_REMINDER_INTERVAL (on the service's clock),
 * and its end is told too; the backup-age checks likewise, apart from the WAL one.
 */
describe('serve: wal.stalled / check.failed once per change, reminders, recovery (real storage, real receiver)', () => {
  let storeDir: string
  let work: string
  let service: ArchivingService | undefined
  let receiver: Awaited<ReturnType<typeof startReceiver>>

  beforeAll(async () => {
    storeDir = await tempDir('dbb-notify-alerts-store-')
    work = await tempDir('dbb-notify-alerts-work-')
    receiver = await startReceiver()
  })

  afterAll(async () => {
    await service?.stop()
    await receiver.close()
    await fs.rm(storeDir, {recursive: true, force: true})
    await fs.rm(work, {recursive: true, force: true})
  })

  it('raises, stays quiet, reminds, recovers', async () => {
    const clock = new FakeClock(new Date('2026-12-02T00:00:00Z'))
    const config = loadConfig(['database', 'namePrefix', 'retention', 'schedule', 'baseBackup', 'archiving', 'walStreaming', 'check', 'notify'], {
      DB_HOST: '127.0.0.1',
      DB_NAME: 'app',
      CHECK_WAL: 'true',
      CHECK_BASE_BACKUP: 'false',
      CHECK_LOGICAL_BACKUP: 'false',
      NOTIFY_URLS: `webhook+${receiver.url}/alerts`,
      NOTIFY_REMINDER_INTERVAL: '1h',
    }, {})
    service = await startArchivingService({config, storage: new LocalBackend(storeDir), logger: captureLogger().logger, clock})
    const kinds = () => receiver.received.map((request) => JSON.parse(request.body) as {kind: string; summary: string})
    const settled = async (count: number) => waitFor(() => (receiver.received.length >= count ? kinds() : undefined), 10_000, `${count} deliveries`)

    await service.checkNow()
    expect((await settled(1)).map((event) => event.kind)).toEqual(['wal.stalled'])
    expect(kinds()[0].summary).toMatch(/^WAL archiving stalled on .*: no archived WAL segment found/)

    // 50 minutes of checks every 10 minutes, still failing: nothing new.
    for (let check = 0; check < 5; check++) {
      clock.advance(10 * 60_000)
      await service.checkNow()
    }
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(receiver.received).toHaveLength(1)

    clock.advance(11 * 60_000)
    await service.checkNow()
    expect((await settled(2))[1].summary).toMatch(/^still: WAL archiving stalled/)

    // Archiving resumes: a segment arrives through dbb wal push.
    const segment = await writeSourceSegment(work, segmentName(1), 64 * 1024, 1)
    expect((await runCli(['wal', 'push', segment.file], {BACKUP_LOCAL_DIR: storeDir})).code).toBe(0)
    await service.checkNow()
    expect((await settled(3)).map((event) => event.kind)).toEqual(['wal.stalled', 'wal.stalled', 'wal.recovered'])
    await service.checkNow()
    await new Promise((resolve) => setTimeout(resolve, 300))
    expect(receiver.received).toHaveLength(3)
    // The WAL failure was not told twice: no check.failed for it.
    expect(kinds().some((event) => event.kind === 'check.failed')).toBe(false)
  })
})
