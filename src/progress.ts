import type {StreamProgress} from './backup/pipeline'
import type {Logger} from './logger'
import {formatBytes, formatElapsed} from './format'
import {clearLiveLine, drawLiveLine} from './live-line'

export interface ProgressReporter {
  /**
   * `done` undefined: the work's own count is not known yet (the dump's size of a backup through a
   * compressor program comes at its end, src/backup/pipeline.ts); the line then counts `extra.storedBytes`.
   */
  update(done: number | undefined, extra?: Record<string, number>): void
  finish(): void
}

/**
 * Long work shows progress: on a terminal, one line rewritten in place (bytes, rate, elapsed),
 * cleared before every log line and when the work ends (src/live-line.ts);
 * elsewhere (containers, cron, CI) a structured log event every `intervalMs`.
 */
export function createProgress(options: {
  label: string
  logger: Logger
  event: string
  interactive?: boolean
  intervalMs?: number
  stream?: NodeJS.WriteStream
  /** The amount `done` counts towards, when known (e.g. a dump's size from its sidecar): adds percent and ETA. */
  total?: number
}): ProgressReporter {
  const stream = options.stream ?? process.stderr
  const interactive = options.interactive ?? Boolean(stream.isTTY)
  const intervalMs = options.intervalMs ?? (interactive ? 250 : 10_000)
  const started = Date.now()
  // A terminal line appears at once; log events only once there is progress to report.
  let last = interactive ? 0 : started
  let latest: number | undefined = 0
  let latestExtra: Record<string, number> = {}
  let drawn = false

  const render = () => {
    const elapsedMs = Date.now() - started
    if (latest === undefined) {
      // Only the stored bytes are known: they are the figure, and the rate.
      const stored = latestExtra.storedBytes ?? 0
      const rate = elapsedMs > 0 ? (stored / elapsedMs) * 1000 : 0
      if (interactive) {
        drawLiveLine(stream, `${options.label}: ${formatBytes(stored)} stored, ${formatBytes(rate)}/s, ${formatElapsed(elapsedMs)}`)
        drawn = true
      } else {
        options.logger.info({event: options.event, ...latestExtra, elapsedMs, bytesPerSecond: Math.round(rate)}, `${options.label}: ${formatBytes(stored)} stored`)
      }

      return
    }

    const done = latest
    const rate = elapsedMs > 0 ? (done / elapsedMs) * 1000 : 0
    const {total} = options
    const fraction = total === undefined || total <= 0 ? undefined : Math.min(1, done / total)
    const etaMs = fraction === undefined || rate <= 0 ? undefined : ((total! - Math.min(done, total!)) / rate) * 1000
    if (interactive) {
      const extra = latestExtra.storedBytes === undefined ? '' : `, ${formatBytes(latestExtra.storedBytes)} stored`
      const share = fraction === undefined ? '' : ` of ${formatBytes(total!)} (${(fraction * 100).toFixed(1)} %)`
      const eta = etaMs === undefined ? '' : `, ETA ${formatElapsed(etaMs)}`
      drawLiveLine(stream, `${options.label}: ${formatBytes(done)}${share}${extra}, ${formatBytes(rate)}/s, ${formatElapsed(elapsedMs)}${eta}`)
      drawn = true
    } else {
      const known = fraction === undefined ? {} : {totalBytes: total, percent: Math.round(fraction * 1000) / 10, ...(etaMs === undefined ? {} : {etaSeconds: Math.round(etaMs / 1000)})}
      options.logger.info(
        {event: options.event, bytes: done, ...known, ...latestExtra, elapsedMs, bytesPerSecond: Math.round(rate)},
        `${options.label}: ${formatBytes(done)}${fraction === undefined ? '' : ` (${(fraction * 100).toFixed(1)} %)`}`,
      )
    }
  }

  return {
    update(done, extra = {}) {
      latest = done
      latestExtra = extra
      const now = Date.now()
      if (now - last >= intervalMs) {
        last = now
        render()
      }
    },
    // The line goes away: the command's summary (or error) that follows carries the final numbers.
    finish() {
      if (interactive && drawn) {
        clearLiveLine()
        drawn = false
      }
    },
  }
}

/**
 * A backup's progress as its pipeline streams: `backup run` (a live line on a terminal, log events
 * elsewhere) and `dbb serve`'s jobs (log events) report it the same way. `onProgress` is the
 * pipeline's callback.
 */
export function createBackupProgress(logger: Logger, options: {interactive?: boolean} = {}): ProgressReporter & {onProgress(progress: StreamProgress): void} {
  const progress = createProgress({label: 'backing up', logger, event: 'backup.progress', ...options})
  return Object.assign(progress, {onProgress: ({sourceBytes, storedBytes}: StreamProgress) => progress.update(sourceBytes, {storedBytes})})
}
