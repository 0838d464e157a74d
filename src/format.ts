/** Human-readable output for tables and progress lines. */

export function formatBytes(bytes: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB']
  let value = bytes
  let unit = 0
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000
    unit++
  }

  return `${unit === 0 ? value : value.toFixed(1)} ${units[unit]}`
}

export function formatAge(fromIso: string, now = new Date()): string {
  return formatElapsed(now.getTime() - Date.parse(fromIso))
}

/** A span of time the way every age and duration is shown: 45s, 12m, 5h3m, 3d0h. */
export function formatElapsed(milliseconds: number): string {
  const seconds = Math.max(0, Math.round(milliseconds / 1000))
  if (seconds < 60) return `${seconds}s`
  if (seconds < 3600) return `${Math.floor(seconds / 60)}m`
  if (seconds < 86_400) return `${Math.floor(seconds / 3600)}h${Math.floor((seconds % 3600) / 60)}m`
  return `${Math.floor(seconds / 86_400)}d${Math.floor((seconds % 86_400) / 3600)}h`
}

/** A plain text table with a header row and columns padded to their widest cell. */
export function renderTable(headers: string[], rows: string[][]): string {
  const widths = headers.map((header, column) => Math.max(header.length, ...rows.map((row) => (row[column] ?? '').length)))
  const line = (cells: string[]) =>
    cells
      .map((cell, column) => cell.padEnd(widths[column]))
      .join('  ')
      .trimEnd()
  return [line(headers), line(widths.map((width) => '-'.repeat(width))), ...rows.map((row) => line(row))].join('\n')
}

/** Untrusted text (an id from a URL or argument) safe to echo in a message: printable ASCII, at most 80 characters. */
export function printableExcerpt(text: string): string {
  const printable = text.replace(/[^\x20-\x7E]/g, '?')
  return printable.length > 80 ? `${printable.slice(0, 80)}…` : printable
}
