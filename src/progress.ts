import type {Logger} from './logger'
import {formatBytes} from './format'
import {clearLiveLine, drawLiveLine} from './live-line'

export interface ProgressReporter {
  update(done: number, extra?: Record<string, number>): void
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
  /** The size `update` counts towards, when known: adds percent and an ETA. */
  totalBytes?: number
}): ProgressReporter {
  const stream = options.stream ?? process.stderr
  const interactive = options.interactive ?? Boolean(stream.isTTY)
  const intervalMs = options.intervalMs ?? (interactive ? 250 : 10_000)
  const started = Date.now()
  // A terminal line appears at once; log events only once there is progress to report.
  let last = interactive ? 0 : started
  let latest = 0
  let latestExtra: Record<string, number> = {}
  let drawn = false

  const total = options.totalBytes !== undefined && options.totalBytes > 0 ? options.totalBytes : undefined
  const percent = () => (total ? Math.min(100, Math.floor((latest / total) * 100)) : 0)
  /** ` of 4.3 MB (42%, 00:12 left)` when the total is known. */
  const share = (rate: number) => {
    if (!total) return ''
    const left = rate > 0 && latest < total ? `, ${formatElapsed(((total - latest) / rate) * 1000)} left` : ''
    return ` of ${formatBytes(total)} (${percent()}%${left})`
  }

  const render = () => {
    const elapsedMs = Date.now() - started
    const rate = elapsedMs > 0 ? (latest / elapsedMs) * 1000 : 0
    if (interactive) {
      const extra = latestExtra.storedBytes === undefined ? '' : `, ${formatBytes(latestExtra.storedBytes)} stored`
      drawLiveLine(stream, `${options.label}: ${formatBytes(latest)}${extra}${share(rate)}, ${formatBytes(rate)}/s, ${formatElapsed(elapsedMs)}`)
      drawn = true
    } else {
      options.logger.info(
        {event: options.event, bytes: latest, ...latestExtra, ...(total ? {totalBytes: total, percent: percent()} : {}), elapsedMs, bytesPerSecond: Math.round(rate)},
        `${options.label}: ${formatBytes(latest)}`,
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

function formatElapsed(milliseconds: number): string {
  const seconds = Math.floor(milliseconds / 1000)
  return `${String(Math.floor(seconds / 60)).padStart(2, '0')}:${String(seconds % 60).padStart(2, '0')}`
}
