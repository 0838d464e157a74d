import * as http from 'node:http'
import type {AddressInfo, Socket} from 'node:net'

/**
 * A small HTTP proxy of the test suite's own, between the AWS SDK (in-process or in a spawned
 * dbb) and the S3 server: it records every request (method, path and query, status), can answer
 * chosen requests with an injected S3 error instead of forwarding them, and can be closed with all
 * its connections cut. It lets tests prove what went over the wire, e.g. that a failed upload sent
 * AbortMultipartUpload, which the test server does not implement.
 */
export interface RecordedRequest {
  method: string
  /** Path and query, e.g. `/bucket/backups/x?partNumber=2&uploadId=…`. */
  url: string
  headers: http.IncomingHttpHeaders
  status?: number
}

export interface InjectedFailure {
  match: (request: RecordedRequest) => boolean
  /**
   * `answer` (default): an S3 error response with status/code/message. `reset`: the connection is
   * cut without an answer. `stall`: nothing is answered for `stallMs`, then the connection is cut
   * (a hung server, bounded so tests stay bounded). `cut`: the request is forwarded, and the
   * answer's connection is cut once `afterBytes` of its body have gone through (a connection lost
   * mid-download). `hold`: the same, but the connection stays open and silent until the proxy
   * closes (a download stopped mid-stream, for as long as the test needs it).
   */
  kind?: 'answer' | 'reset' | 'stall' | 'cut' | 'hold'
  stallMs?: number
  afterBytes?: number
  status?: number
  code?: string
  message?: string
  /** How many matching requests fail (default 1). */
  times?: number
}

export interface RecordingProxy {
  port: number
  endpoint: string
  requests: RecordedRequest[]
  /** The most requests that were in flight at once (proves concurrency). */
  readonly maxInFlight: number
  inject(failure: InjectedFailure): void
  /**
   * Called for each request as it arrives, before it is forwarded; a returned promise holds the
   * request until it settles (a fault that must have taken effect before the server sees the request).
   */
  onRequest(listener: (request: RecordedRequest) => void | Promise<void>): void
  close(): Promise<void>
}

export async function startRecordingProxy(targetPort: () => number): Promise<RecordingProxy> {
  const requests: RecordedRequest[] = []
  const failures: (InjectedFailure & {remaining: number})[] = []
  const listeners: ((request: RecordedRequest) => void | Promise<void>)[] = []
  const sockets = new Set<Socket>()
  let inFlight = 0
  let maxInFlight = 0

  const server = http.createServer((incoming, outgoing) => {
    const record: RecordedRequest = {method: incoming.method ?? 'GET', url: incoming.url ?? '/', headers: incoming.headers}
    requests.push(record)
    inFlight += 1
    maxInFlight = Math.max(maxInFlight, inFlight)
    outgoing.once('close', () => (inFlight -= 1))
    const held = listeners.map((listener) => listener(record)).filter((result): result is Promise<void> => result instanceof Promise)
    if (held.length === 0) forward()
    else void Promise.allSettled(held).then(forward)

    function forward() {
      const failure = failures.find((candidate) => candidate.remaining > 0 && candidate.match(record))
      const midBody = failure?.kind === 'cut' || failure?.kind === 'hold'
      if (failure && !midBody) {
        failure.remaining -= 1
        if (failure.kind === 'reset' || failure.kind === 'stall') {
          record.status = 0
          const cut = () => incoming.socket.destroy()
          if (failure.kind === 'reset') cut()
          else setTimeout(cut, failure.stallMs ?? 1000).unref()
          return
        }

        // Read the request body first, as a server does, so the client sees the answer, not a reset.
        incoming.resume()
        incoming.on('end', () => {
          record.status = failure.status ?? 500
          const body = `<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>${failure.code ?? 'InternalError'}</Code><Message>${failure.message ?? 'injected'}</Message></Error>`
          outgoing.writeHead(record.status, {'content-type': 'application/xml', 'content-length': Buffer.byteLength(body)}).end(body)
        })
        return
      }

      const upstream = http.request(
        {host: '127.0.0.1', port: targetPort(), method: incoming.method, path: incoming.url, headers: incoming.headers},
        (response) => {
          record.status = response.statusCode
          outgoing.writeHead(response.statusCode ?? 502, response.headers)
          response.on('error', () => outgoing.destroy())
          if (!failure || !midBody) {
            response.pipe(outgoing)
            return
          }

          failure.remaining -= 1
          const afterBytes = failure.afterBytes ?? 0
          let sent = 0
          let stopped = false
          response.on('data', (chunk: Buffer) => {
            if (stopped) return
            if (sent + chunk.length > afterBytes) {
              stopped = true
              outgoing.write(chunk.subarray(0, afterBytes - sent))
              // 0, as for a reset: no complete answer reached the client.
              record.status = 0
              response.destroy()
              if (failure.kind === 'cut') outgoing.socket?.destroy()
              return
            }

            sent += chunk.length
            outgoing.write(chunk)
          })
          response.on('end', () => outgoing.end())
        },
      )
      // The server is gone: cut the client's connection too, as a dead server would.
      upstream.on('error', () => incoming.socket.destroy())
      incoming.pipe(upstream)
    }
  })
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const {port} = server.address() as AddressInfo

  return {
    port,
    endpoint: `http://127.0.0.1:${port}`,
    requests,
    get maxInFlight() {
      return maxInFlight
    },
    inject(failure) {
      failures.push({...failure, remaining: failure.times ?? 1})
    },
    onRequest(listener) {
      listeners.push(listener)
    },
    async close() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()))
      for (const socket of sockets) socket.destroy()
      await closed
    },
  }
}

/**
 * The storage-fault matrix's faults (test/reliability/storage-faults-s3.e2e.test.ts), from the
 * `index`-th request a proxy sees on:
 *  - `500`:   that request and the next two answer 500 InternalError (the SDK's 3 attempts: the
 *             operation fails), then the server is healthy again;
 *  - `reset`: the same with the connection cut without an answer;
 *  - `stall`: no answer for 1.5 s, then the connection is cut (a hung server, bounded; the SDK retries).
 */
export type FaultKind = '500' | 'reset' | 'stall'
export const KINDS: FaultKind[] = ['500', 'reset', 'stall']
const SDK_ATTEMPTS = 3

export function faultAt(index: number, kind: FaultKind): InjectedFailure {
  let seen = 0
  // Called once per request until the failure is used up: counts requests, fires from the i-th on.
  const match = () => ++seen >= index
  if (kind === 'stall') return {match, kind: 'stall', stallMs: 1500, times: 1}
  if (kind === 'reset') return {match, kind: 'reset', times: SDK_ATTEMPTS}
  return {match, status: 500, code: 'InternalError', message: 'We encountered an internal error. Please try again.', times: SDK_ATTEMPTS}
}
