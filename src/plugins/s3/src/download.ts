import {Readable} from 'node:stream'

import {formatDuration} from './settings'

export interface GuardedBodyOptions {
  /** Longest wait for the next bytes while the reader is asking for them. */
  idleTimeoutMs: number
  /** `download of backups/x.sql.gz from http://…`, for messages. */
  what: string
}

/**
 * A response body with two guarantees the SDK's socket timeout cannot give a download:
 *
 *  - a bound on silence that counts only while the reader wants bytes. A reader may stop for
 *    minutes (`dbb restore` feeding psql while it builds an index: backpressure pauses the socket),
 *    and that is no failure; a server that sends nothing while we wait is, after `idleTimeoutMs`.
 *  - a failure of the connection is reported as what it is — the connection to storage was lost,
 *    where, after how many bytes — instead of Node's bare `aborted` / `ECONNRESET`, which read like
 *    a user's Ctrl-C or leave the reader guessing which side failed.
 *
 * The error keeps `code: 'STORAGE_CONNECTION_LOST'` (or `STORAGE_TIMEOUT`) and the original as `cause`.
 */
export function guardedBody(source: Readable, options: GuardedBodyOptions): Readable {
  let received = 0
  let timer: NodeJS.Timeout | undefined
  let ended = false

  const disarm = () => {
    if (timer) clearTimeout(timer)
    timer = undefined
  }

  const arm = () => {
    disarm()
    timer = setTimeout(() => {
      const error = Object.assign(
        new Error(
          `${options.what} stalled: no bytes for ${formatDuration(options.idleTimeoutMs)} after ${received.toLocaleString('en-US')} bytes (S3_REQUEST_TIMEOUT); the storage endpoint stopped answering`,
        ),
        {code: 'STORAGE_TIMEOUT'},
      )
      output.destroy(error)
    }, options.idleTimeoutMs)
    timer.unref?.()
  }

  const output = new Readable({
    read() {
      if (ended) return
      arm()
      source.resume()
    },
    destroy(error, callback) {
      disarm()
      source.destroy()
      callback(error)
    },
  })

  source.on('data', (chunk: Buffer) => {
    received += chunk.length
    disarm()
    if (output.push(chunk)) arm()
    else source.pause()
  })
  source.once('end', () => {
    ended = true
    disarm()
    output.push(null)
  })
  source.once('error', (cause: Error) => {
    disarm()
    if (output.destroyed) return
    const error = Object.assign(
      new Error(`${options.what} failed: the connection to storage was lost after ${received.toLocaleString('en-US')} bytes (${cause.message})`, {cause}),
      {code: 'STORAGE_CONNECTION_LOST'},
    )
    output.destroy(error)
  })
  source.once('close', () => {
    if (ended || output.destroyed) return
    disarm()
    output.destroy(
      Object.assign(new Error(`${options.what} failed: the connection to storage was lost after ${received.toLocaleString('en-US')} bytes`), {
        code: 'STORAGE_CONNECTION_LOST',
      }),
    )
  })
  // A body that ends before its Content-Length is an error in Node ("aborted"), not an end: see above.
  source.pause()
  return output
}
