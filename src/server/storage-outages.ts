import type {Readable} from 'node:stream'
import {types} from 'node:util'

import {StorageUnavailableError, errorMessage} from '../errors'
import type {GetOptions, ObjectInfo, PutOptions, StorageBackend} from '../storage/contract'

/**
 * The storage the HTTP routes read, with every backend failure marked as a StorageUnavailableError
 * (503 with the backend's message) — except the answers that are not outages: NOT_FOUND (404),
 * ALREADY_EXISTS, an abort, and programming errors in a backend (a TypeError without an error code
 * stays a masked 500). Errors of a stream after `get` resolved are not marked: by then the response
 * has started, and the client sees the connection close.
 */
export function markingOutages(storage: StorageBackend): StorageBackend {
  const mark = (error: unknown): unknown =>
    isOutage(error) ? new StorageUnavailableError(`storage (${storage.name}) unavailable: ${errorMessage(error)}`, {cause: error}) : error
  const guard = async <T>(operation: () => Promise<T>): Promise<T> => {
    try {
      return await operation()
    } catch (error) {
      throw mark(error)
    }
  }

  return {
    name: storage.name,
    location: storage.location,
    put: (key: string, body: Readable, options?: PutOptions) => guard(() => storage.put(key, body, options)),
    get: (key: string, options?: GetOptions) => guard(() => storage.get(key, options)),
    stat: (key: string) => guard(() => storage.stat(key)),
    async *list(prefix: string): AsyncIterable<ObjectInfo> {
      try {
        yield* storage.list(prefix)
      } catch (error) {
        throw mark(error)
      }
    },
    delete: (key: string) => guard(() => storage.delete(key)),
    health: () => guard(() => storage.health()),
    close: storage.close && (() => storage.close!()),
  }
}

const NOT_OUTAGES = new Set(['NOT_FOUND', 'ALREADY_EXISTS', 'ABORT_ERR'])
const PROGRAMMING_ERRORS = new Set(['TypeError', 'ReferenceError', 'SyntaxError', 'RangeError'])

function isOutage(error: unknown): boolean {
  if (!types.isNativeError(error)) return true
  const {code} = error as {code?: unknown}
  if (typeof code === 'string' && NOT_OUTAGES.has(code)) return false
  if (error.name === 'AbortError') return false
  // Node's own system and network errors carry a code (ECONNREFUSED, ERR_…): those are outages.
  return !(PROGRAMMING_ERRORS.has(error.name) && typeof code !== 'string')
}
