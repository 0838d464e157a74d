import {Readable} from 'node:stream'

import {DEFAULT_TIME_BOUND_MS} from '@dbb/storage-contract'
import type {GetOptions, ListOptions, ObjectInfo, PutOptions, StagedLeftover, StorageBackend, SweepOptions} from '@dbb/storage-contract'

/**
 * The contract's time rule, enforced by core around every call of a backend (see "Time" in
 * @dbb/storage-contract): a backend that hangs — a server that accepts and never answers, a plugin
 * without timeouts, a hung mount — fails the operation instead of stalling dbb forever (a cron
 * backup that never ends, a restore_command PostgreSQL waits on). The limit is the backend's own
 * `timeBoundMs` plus a grace (10 %, at least 1 s), so a backend that keeps its bound reports its own,
 * more precise error first.
 *
 * What counts as waiting: a call that has not settled; a list page not yet delivered; a `get`
 * stream that delivers nothing while its reader waits (a reader that stops reading is not the
 * backend's fault); a `put` whose backend does not take the next bytes of its body while they are
 * ready, or does not settle once the body ended. Bytes that flow reset the clock.
 */
export function withTimeBound(backend: StorageBackend, options: {plugin: string; boundMs?: number}): StorageBackend {
  const boundMs = options.boundMs ?? backend.timeBoundMs ?? DEFAULT_TIME_BOUND_MS
  const limitMs = boundMs + Math.max(1000, Math.round(boundMs / 10))
  const timeout = (operation: string) =>
    Object.assign(
      new Error(
        `storage backend "${backend.name}" (plugin ${options.plugin}) did not answer ${operation} within ${formatSeconds(limitMs)} ` +
          `(its time bound is ${formatSeconds(boundMs)}): ${backend.location} is not responding`,
      ),
      {code: 'STORAGE_TIMEOUT'},
    )

  /** The promise, or a rejection once it has been pending for the limit. */
  const bounded = <T>(operation: string, start: (signal: AbortSignal) => Promise<T>, outer?: AbortSignal): Promise<T> => {
    const controller = new AbortController()
    const signal = outer ? AbortSignal.any([outer, controller.signal]) : controller.signal
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        const error = timeout(operation)
        controller.abort(error)
        reject(error)
      }, limitMs)
      start(signal).then(
        (value) => {
          clearTimeout(timer)
          resolve(value)
        },
        (error: unknown) => {
          clearTimeout(timer)
          reject(error)
        },
      )
    })
  }

  const bounds: StorageBackend = {
    name: backend.name,
    location: backend.location,
    timeBoundMs: boundMs,
    put(key: string, body: Readable, putOptions: PutOptions = {}) {
      const controller = new AbortController()
      const signal = putOptions.signal ? AbortSignal.any([putOptions.signal, controller.signal]) : controller.signal
      return new Promise<{sizeBytes: number}>((resolve, reject) => {
        const watched = watchConsumption(body, limitMs, () => {
          const error = timeout(`the write of ${key} (it stopped taking data)`)
          controller.abort(error)
          destroyWith(watched.stream, error)
          reject(error)
        })
        backend.put(key, watched.stream, {...putOptions, signal}).then(
          (value) => {
            watched.stop()
            resolve(value)
          },
          (error: unknown) => {
            watched.stop()
            reject(error)
          },
        )
      })
    },
    async get(key: string, getOptions: GetOptions = {}) {
      const stream = await bounded(`a read of ${key}`, (signal) => backend.get(key, {...getOptions, signal}), getOptions.signal)
      return idleGuard(stream, limitMs, () => timeout(`a read of ${key} (no data while waiting)`))
    },
    stat: (key: string) => bounded(`stat of ${key}`, () => backend.stat(key)),
    delete: (key: string) => bounded(`a delete of ${key}`, () => backend.delete(key)),
    health: () => bounded('a health check', () => backend.health()),
    list(prefix: string, listOptions?: ListOptions): AsyncIterable<ObjectInfo> {
      return {
        [Symbol.asyncIterator]() {
          const iterator = backend.list(prefix, listOptions)[Symbol.asyncIterator]()
          return {
            next: () => bounded(`a listing of "${prefix}"`, () => iterator.next()),
            return: async (value?: unknown) => (iterator.return ? iterator.return(value) : {done: true as const, value: undefined}),
          }
        },
      }
    },
  }
  if (backend.close) bounds.close = () => bounded('close', () => backend.close!())
  if (backend.sweep) {
    bounds.sweep = (olderThan: Date, sweepOptions?: SweepOptions): Promise<StagedLeftover[]> =>
      bounded('a sweep of staged leftovers', () => backend.sweep!(olderThan, sweepOptions))
  }

  return bounds
}

/**
 * The body as the backend sees it, with a clock that runs while data is ready and the backend does
 * not take it (or after the body ended, until `stop`), and stops whenever the backend reads. The
 * source's own pace (pg_dump thinking) never counts. A source error reaches the backend unchanged.
 */
function watchConsumption(source: Readable, limitMs: number, onStall: () => void): {stream: Readable; stop: () => void} {
  let timer: NodeJS.Timeout | undefined
  let ended = false
  const arm = () => {
    clearTimeout(timer)
    timer = setTimeout(onStall, limitMs)
  }

  const disarm = () => {
    clearTimeout(timer)
    timer = undefined
  }

  const stream = new Readable({
    highWaterMark: source.readableHighWaterMark,
    read() {
      if (ended) return
      disarm()
      source.resume()
    },
    destroy(error, callback) {
      disarm()
      detach()
      // The backend gave up (or failed): the producer stops too, with the same error, as a
      // pipeline would (the caller's pipeline then reports the backend's error first).
      if (error && !source.destroyed) destroyWith(source, error)
      callback(error)
    },
  })
  const onData = (chunk: Buffer) => {
    if (!stream.push(chunk)) {
      source.pause()
      arm()
    }
  }

  const onEnd = () => {
    ended = true
    stream.push(null)
    arm()
  }

  const onError = (error: Error) => stream.destroy(error)
  const detach = () => {
    source.off('data', onData)
    source.off('end', onEnd)
    source.off('error', onError)
  }

  source.on('data', onData)
  source.once('end', onEnd)
  source.once('error', onError)
  source.pause()
  return {
    stream,
    stop: () => {
      disarm()
      detach()
    },
  }
}

/** The stream, failing with `timeout()` when its reader waits longer than the limit for the next bytes. */
function idleGuard(source: Readable, limitMs: number, timeout: () => Error): Readable {
  let timer: NodeJS.Timeout | undefined
  const disarm = () => {
    clearTimeout(timer)
    timer = undefined
  }

  const guarded = new Readable({
    highWaterMark: source.readableHighWaterMark,
    read() {
      // The reader wants bytes: from now on silence is the backend's.
      if (!timer) {
        timer = setTimeout(() => {
          const error = timeout()
          source.destroy(error)
          guarded.destroy(error)
        }, limitMs)
      }

      source.resume()
    },
    destroy(error, callback) {
      disarm()
      if (!source.destroyed) source.destroy(error ?? undefined)
      callback(error)
    },
  })
  source.on('data', (chunk: Buffer) => {
    disarm()
    if (!guarded.push(chunk)) source.pause()
  })
  source.once('end', () => {
    disarm()
    guarded.push(null)
  })
  source.once('error', (error) => guarded.destroy(error))
  source.pause()
  return guarded
}

/** Destroys with the error when someone listens for it; otherwise without, so an unobserved stream does not crash the process. */
function destroyWith(stream: Readable, error: Error): void {
  if (stream.listenerCount('error') > 0) stream.destroy(error)
  else stream.destroy()
}

function formatSeconds(ms: number): string {
  return ms % 1000 === 0 ? `${ms / 1000} s` : `${(ms / 1000).toFixed(1)} s`
}
