/**
 * The one live line on a terminal (progress: bytes, rate, elapsed), kept apart from log lines:
 * the logger clears it before writing a line (so `…00:01[03:01:35] INFO: stored…` cannot
 * happen), and the next progress update draws it again below. On stderr, like the logs.
 */
let shownOn: NodeJS.WriteStream | undefined

export function drawLiveLine(stream: NodeJS.WriteStream, text: string): void {
  const width = stream.columns && stream.columns > 1 ? stream.columns - 1 : undefined
  // Never wider than the terminal: a wrapped line could not be cleared with one \r.
  stream.write(`\r\u001B[2K${width === undefined ? text : text.slice(0, width)}`)
  shownOn = stream
}

export function clearLiveLine(): void {
  if (shownOn === undefined) return
  shownOn.write('\r\u001B[2K')
  shownOn = undefined
}
