import {Writable} from 'node:stream'

import {createLogger} from '../../src/logger'
import {createProgress} from '../../src/progress'

function captureStream(isTTY: boolean) {
  const chunks: string[] = []
  const stream = new Writable({
    write(chunk, _encoding, callback) {
      chunks.push(String(chunk))
      callback()
    },
  }) as unknown as NodeJS.WriteStream
  stream.isTTY = isTTY
  return {stream, text: () => chunks.join('')}
}

describe('progress', () => {
  it('draws one live line on a terminal, rewritten in place, and clears it at the end', () => {
    const {stream, text} = captureStream(true)
    const progress = createProgress({label: 'backing up', logger: createLogger({level: 'silent'}), event: 'x', stream, intervalMs: 0})
    progress.update(1_500_000, {storedBytes: 300_000})
    progress.update(3_000_000, {storedBytes: 600_000})
    progress.finish()
    const output = text()
    expect(output.match(/\r\u001B\[2K/g)?.length).toBe(3)
    // The summary the command prints next starts on an empty line, and nothing is drawn after it.
    expect(output).toMatch(/backing up: 3\.0 MB, 600\.0 kB stored, [\d.]+ \w+\/s, 0s\r\u001B\[2K$/)
  })

  it('shows percent and time left when the total is known (restore)', () => {
    const {stream, text} = captureStream(true)
    const progress = createProgress({label: 'restoring into app', logger: createLogger({level: 'silent'}), event: 'x', stream, intervalMs: 0, total: 4_000_000})
    progress.update(1_000_000)
    expect(text()).toMatch(/restoring into app: 1\.0 MB of 4\.0 MB \(25\.0 %\), [\d.]+ \w*B\/s, 0s(, ETA \w+)?$/)
    progress.finish()
  })

  it('a plain log line clears the live line first; the next update draws it again', () => {
    const {stream, text} = captureStream(true)
    const log = captureStream(false)
    const logger = createLogger({format: 'plain', destination: log.stream})
    const progress = createProgress({label: 'backing up', logger, event: 'x', stream, intervalMs: 0})
    progress.update(900)
    logger.info('stored, verifying')
    expect(text()).toMatch(/backing up: 900 B.*\r\u001B\[2K$/)
    expect(log.text()).toMatch(/INFO.*: .*stored, verifying/)
    progress.update(2_000)
    expect(text()).toMatch(/\r\u001B\[2Kbacking up: 2\.0 kB, [^\r]*$/)
  })

  it('emits structured log events instead when not on a terminal', () => {
    const lines: string[] = []
    const destination = new Writable({
      write(chunk, _encoding, callback) {
        lines.push(String(chunk))
        callback()
      },
    })
    const {stream, text} = captureStream(false)
    const logger = createLogger({format: 'json', destination})
    const progress = createProgress({label: 'backing up', logger, event: 'backup.progress', stream, intervalMs: 0})
    progress.update(2048, {storedBytes: 100})
    progress.finish()
    expect(text()).toBe('')
    const event = JSON.parse(lines[0])
    expect(event).toMatchObject({event: 'backup.progress', bytes: 2048, storedBytes: 100, msg: 'backing up: 2.0 kB'})
  })
})

describe('progress whose own count comes only at the end (a zstd backup: the zstd program checks and counts the dump)', () => {
  it('counts the stored bytes instead, and says so, on a terminal and in the log event (no dump size made up)', () => {
    const {stream, text} = captureStream(true)
    const progress = createProgress({label: 'backing up', logger: createLogger({level: 'silent'}), event: 'x', stream, intervalMs: 0})
    progress.update(undefined, {storedBytes: 3_000_000})
    expect(text()).toMatch(/backing up: 3\.0 MB stored, [\d.]+ \w+\/s, 0s$/)
    progress.finish()

    const lines: string[] = []
    const destination = new Writable({
      write(chunk, _encoding, callback) {
        lines.push(String(chunk))
        callback()
      },
    })
    const logged = createProgress({label: 'backing up', logger: createLogger({format: 'json', destination}), event: 'backup.progress', stream: captureStream(false).stream, intervalMs: 0})
    logged.update(undefined, {storedBytes: 3_000_000})
    const event = JSON.parse(lines[0])
    expect(event).toMatchObject({event: 'backup.progress', storedBytes: 3_000_000, msg: 'backing up: 3.0 MB stored'})
    expect(event).not.toHaveProperty('bytes')
  })
})

describe('progress with a known total (restore: the dump size from the sidecar)', () => {
  it('shows percent and ETA on a terminal, and puts them in the log event otherwise', () => {
    const {stream, text} = captureStream(true)
    const progress = createProgress({label: 'restoring', logger: createLogger({level: 'silent'}), event: 'x', stream, intervalMs: 0, total: 4_000_000})
    progress.update(1_000_000)
    expect(text()).toMatch(/restoring: 1\.0 MB of 4\.0 MB \(25\.0 %\), [\d.]+ \w+\/s, 0s(, ETA \w+)?$/)

    const lines: string[] = []
    const destination = new Writable({
      write(chunk, _encoding, callback) {
        lines.push(String(chunk))
        callback()
      },
    })
    const quiet = captureStream(false)
    const logged = createProgress({label: 'restoring', logger: createLogger({format: 'json', destination}), event: 'restore.progress', stream: quiet.stream, intervalMs: 0, total: 2048})
    logged.update(1024)
    expect(JSON.parse(lines[0])).toMatchObject({event: 'restore.progress', bytes: 1024, totalBytes: 2048, percent: 50, msg: 'restoring: 1.0 kB (50.0 %)'})
  })
})
