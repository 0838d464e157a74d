/** What to send for a `Range` header against an object of `size` bytes (RFC 9110 §14). */
export type RangeDecision = {kind: 'full'} | {kind: 'partial'; start: number; end: number} | {kind: 'unsatisfiable'}

/**
 * One byte range (`bytes=500-`, `bytes=0-1023`, `bytes=-1024`), which is what resuming clients
 * (curl -C -, wget -c, browsers) send. A header that is absent, malformed, in another unit or asks
 * for several ranges is ignored and the whole object is sent, as the RFC allows.
 */
export function decideRange(header: string | undefined, size: number): RangeDecision {
  if (!header) return {kind: 'full'}
  const match = /^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$/i.exec(header)
  if (!match || (match[1] === '' && match[2] === '')) return {kind: 'full'}
  const [first, last] = [match[1], match[2]]
  if (first === '') {
    const suffix = Number(last)
    if (suffix === 0 || size === 0) return {kind: 'unsatisfiable'}
    return {kind: 'partial', start: Math.max(0, size - suffix), end: size - 1}
  }

  const start = Number(first)
  const end = last === '' ? Number.MAX_SAFE_INTEGER : Number(last)
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(end) || end < start) return {kind: 'full'}
  if (start >= size) return {kind: 'unsatisfiable'}
  return {kind: 'partial', start, end: Math.min(end, size - 1)}
}
