import * as fs from 'node:fs/promises'
import * as net from 'node:net'

import {storageTestCases} from '@dbb/storage-test-suite'
import type {StorageTestCase} from '@dbb/storage-test-suite'

import {LocalBackend} from '../../src/plugins/local/src/local-backend'
import type {StorageBackend} from '../../src/storage/contract'
import {tempDir} from '../helpers/cli'

/**
 * The kit is only worth running if it fails a backend that breaks a rule: each case below takes a
 * correct backend (local), breaks one rule, and expects exactly the case for that rule to fail.
 */
const directories: string[] = []
afterAll(async () => {
  await Promise.all(directories.map((directory) => fs.rm(directory, {recursive: true, force: true})))
})

async function local(): Promise<LocalBackend> {
  const directory = await tempDir('dbb-kit-broken-')
  directories.push(directory)
  return new LocalBackend(directory)
}

/** The local backend with some methods replaced. */
function broken(change: (backend: LocalBackend) => Partial<StorageBackend>): () => Promise<StorageBackend> {
  return async () => {
    const backend = await local()
    return Object.assign(Object.create(backend) as StorageBackend, change(backend))
  }
}

function find(cases: StorageTestCase[], text: string): StorageTestCase {
  const found = cases.find((testCase) => testCase.name.includes(text))
  if (!found) throw new Error(`no case named like ${text}`)
  return found
}

describe('the storage kit fails backends that break the contract', () => {
  it('a listing that ignores startAfter', async () => {
    const cases = storageTestCases({name: 'no-startAfter', create: broken((backend) => ({list: (prefix) => backend.list(prefix)}))})
    await expect(find(cases, 'lists only keys after startAfter').run()).rejects.toThrow()
    await expect(find(cases, 'stores a stream and returns exactly its bytes').run()).resolves.toBeUndefined()
  })

  it('a range read that returns the whole object', async () => {
    const cases = storageTestCases({name: 'no-ranges', create: broken((backend) => ({get: (key) => backend.get(key)}))})
    await expect(find(cases, 'reads byte ranges').run()).rejects.toThrow()
  })

  it('an unsafe key refused with another error code', async () => {
    const cases = storageTestCases({
      name: 'wrong-code',
      create: broken((backend) => ({
        stat: async (key) => {
          if (key.includes('..')) throw new Error(`invalid storage key ${key}`)
          return backend.stat(key)
        },
      })),
    })
    await expect(find(cases, 'refuses every unsafe key').run()).rejects.toThrow(/stat of key/)
  })

  it('a missing key reported as absent by get (undefined stream) instead of NOT_FOUND', async () => {
    const cases = storageTestCases({
      name: 'no-not-found',
      create: broken((backend) => ({get: async (key, options) => backend.get(key, options).catch(() => undefined as never)})),
    })
    await expect(find(cases, 'get() of a missing key rejects with code NOT_FOUND').run()).rejects.toThrow()
  })

  it('a networked backend without its own timeout: the unresponsive-server case fails', async () => {
    const cases = storageTestCases({
      name: 'no-timeout',
      create: () => local(),
      unresponsive: async ({port}) => {
        // Talks to the server and waits for an answer for ever, while claiming a 1 s bound.
        const hang = () =>
          new Promise<never>((_resolve, reject) => {
            const socket = net.connect(port, '127.0.0.1', () => socket.write('GET / HTTP/1.1\r\n\r\n'))
            socket.on('error', reject)
          })
        return {name: 'no-timeout', location: 'x', timeBoundMs: 1000, put: hang, get: hang, stat: hang, delete: hang, health: hang, list: () => ({[Symbol.asyncIterator]: () => ({next: hang})})}
      },
    })
    await expect(find(cases, 'never answers').run()).rejects.toThrow(/still waiting/)
  }, 30_000)

  it('a provider with an invalid name', async () => {
    const cases = storageTestCases({
      name: 'bad-provider',
      create: () => local(),
      provider: {name: 'WebDAV2', summary: 's', settings: [], create: async () => local()},
    })
    await expect(find(cases, 'the provider has valid fields').run()).rejects.toThrow(/name "WebDAV2" is invalid/)
  })
})
