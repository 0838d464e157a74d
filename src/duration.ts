import {parse as parseIso, pattern as isoPattern, toSeconds} from 'iso8601-duration'
import ms from 'ms'

/**
 * Parses a duration the way operators write them: ISO-8601 (`PT24H`, `P1D`, `PT30M`) or the
 * `ms` shorthand (`24h`, `30m`, `7d`). Returns milliseconds, or undefined when it is neither.
 * A bare number is refused: without a unit, `30` is ambiguous (seconds? minutes?).
 */
export function parseDuration(text: string): number | undefined {
  const value = text.trim()
  if (/^P/i.test(value)) {
    const anchored = new RegExp(`^${isoPattern.source}$`)
    if (!anchored.test(value.toUpperCase()) || value.toUpperCase() === 'P' || /T$/i.test(value)) return undefined
    return Math.round(toSeconds(parseIso(value.toUpperCase())) * 1000)
  }

  if (!/^\d+(\.\d+)?\s*[a-z]+$/i.test(value)) return undefined
  const result = ms(value as ms.StringValue)
  return typeof result === 'number' && Number.isFinite(result) ? result : undefined
}

/** Milliseconds as an ISO-8601 duration (`PT24H`, `PT1H30M`, `P2DT3H`), as /info reports it. */
export function toIsoDuration(milliseconds: number): string {
  let seconds = Math.round(milliseconds / 1000)
  const days = Math.floor(seconds / 86_400)
  seconds -= days * 86_400
  const hours = Math.floor(seconds / 3600)
  seconds -= hours * 3600
  const minutes = Math.floor(seconds / 60)
  seconds -= minutes * 60
  const time = `${hours ? `${hours}H` : ''}${minutes ? `${minutes}M` : ''}${seconds ? `${seconds}S` : ''}`
  if (!days && !time) return 'PT0S'
  return `P${days ? `${days}D` : ''}${time ? `T${time}` : ''}`
}
