import * as fs from 'node:fs/promises'
import * as stream from 'node:stream'
import {Duplex, Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'

import {runTool} from '../backup/child-process'
import {Compressor, DamagedStreamError, ProgramFilter, createDecompressor} from '../compress/codec-streams'
import {CodecName} from '../compress/codecs'
import {ConfigError, OperationError, errorMessage} from '../errors'
import type {StorageBackend} from '../storage/contract'
import {isEncryptedKey} from './recipients'

/**
 * Client-side encryption with age (issue 20 item 4), through the `age` program — the format
 * author's reference implementation, run like zstd (src/compress/codec-streams.ts): its own
 * process, streaming, at memory speed, with age1… and SSH recipients. dbb writes no crypto of its
 * own. Encryption comes after compression (compressed ciphertext would not shrink), so a stored
 * object is `age -d | gunzip`-able with stock tools.
 *
 * The identity (private key) stays in its file: age gets the path (`-i FILE`), never the key, and
 * age's environment is the same minimal one every child gets (src/backup/child-process.ts).
 */

/** The first line of every age file (age-encryption.org/v1 spec, "Header"). */
export const AGE_MAGIC = Buffer.from('age-encryption.org/v1\n')

/** What an encrypted object is stored as (age's own registration-free type; stock tools go by the .age suffix). */
export const AGE_CONTENT_TYPE = 'application/octet-stream'

const INSTALL_HINT = 'install the age program (e.g. apt-get install age; https://github.com/FiloSottile/age)'

/**
 * Fails with exit 2 before anything starts when ENCRYPTION_RECIPIENTS is set and `age` is missing,
 * or when age refuses a recipient (a bech32 checksum error the syntax check cannot see). Encrypts
 * nothing: the input is empty and the output discarded.
 */
export async function requireAgeForRecipients(recipients: readonly string[]): Promise<void> {
  try {
    await runAge(['-e', ...recipientArgs(recipients)])
  } catch (error) {
    const failure = error as NodeJS.ErrnoException & {stderr?: string}
    if (failure.code === 'ENOENT') throw new ConfigError([{variable: 'ENCRYPTION_RECIPIENTS', message: `encryption needs the age program on PATH: ${INSTALL_HINT}`}])
    throw new ConfigError([{variable: 'ENCRYPTION_RECIPIENTS', message: `age refuses a recipient: ${ageSaid(failure)}`}])
  }
}

/**
 * The identity file a decryption of `what` needs, checked before anything is touched: set,
 * readable, and the age program installed. Its content is never read into dbb.
 */
export async function requireIdentityFile(identityFile: string | undefined, what: string): Promise<string> {
  if (identityFile === undefined) {
    throw new ConfigError([
      {variable: 'AGE_IDENTITY_FILE', message: `${what} is encrypted with age: set AGE_IDENTITY_FILE to the age identity file (age-keygen output) or SSH private key of one of its recipients`, example: '/run/secrets/age-identity.txt'},
    ])
  }

  try {
    await fs.access(identityFile, fs.constants.R_OK)
  } catch (error) {
    throw new ConfigError([{variable: 'AGE_IDENTITY_FILE', message: `${identityFile} cannot be read (${(error as NodeJS.ErrnoException).code ?? errorMessage(error)})`}])
  }

  try {
    await runAge(['--version'])
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') throw new ConfigError([{variable: 'AGE_IDENTITY_FILE', message: `decryption needs the age program on PATH: ${INSTALL_HINT}`}])
    throw new OperationError(`age --version failed: ${errorMessage(error)}`)
  }

  return identityFile
}

/** `age -e -r …`: compressed bytes in, an age file out. */
export function createEncryptor(recipients: readonly string[]): Compressor {
  return new ProgramFilter('age', ['-e', ...recipientArgs(recipients)], (detail) => new OperationError(`age failed while encrypting (${detail})`), undefined, 'ENCRYPTION_RECIPIENTS')
}

/**
 * `age -d -i FILE`: an age file in, its plaintext out. age authenticates every 64 KiB chunk and
 * the end of the stream, so a flipped byte or a cut fails it (as a damaged gzip fails gunzip);
 * the input must start with age's magic line.
 */
export function createDecryptor(identityFile: string): Duplex {
  return new ProgramFilter('age', ['-d', '-i', identityFile], (detail) => new DamagedStreamError(`not a valid age stream (${detail})`), AGE_MAGIC, 'AGE_IDENTITY_FILE')
}

/** The decoder of a stored object: decrypt (when its key ends in .age) then decompress, as one stream. */
export function createObjectDecoder(key: string, codec: CodecName, identityFile: string | undefined, options: {chunkSize?: number} = {}): Duplex {
  if (!isEncryptedKey(key)) return createDecompressor(codec, options)
  if (identityFile === undefined) throw new ConfigError([{variable: 'AGE_IDENTITY_FILE', message: `${key} is encrypted with age: set AGE_IDENTITY_FILE`}])
  return compose(createDecryptor(identityFile), createDecompressor(codec, options))
}

/** stream.compose (Node ≥ 16.9) is missing from the @types/node this project pins. */
export const compose = (stream as unknown as {compose: (...streams: Array<Duplex | ((source: AsyncIterable<Buffer>) => AsyncGenerator<Buffer>)>) => Duplex}).compose

class ProbeDone extends Error {}

/**
 * Before a restore, download or drill touches anything: for an object stored encrypted (its key
 * ends in .age), AGE_IDENTITY_FILE is set, readable, and opens it (proveIdentity). Returns the
 * identity file to decrypt with; undefined for an unencrypted object, which needs none.
 */
export async function prepareDecryption(storage: StorageBackend, key: string, identityFile: string | undefined, signal?: AbortSignal): Promise<string | undefined> {
  if (!isEncryptedKey(key)) return undefined
  const file = await requireIdentityFile(identityFile, key)
  await proveIdentity(storage, key, file, signal)
  return file
}

/**
 * Proves, before a restore touches anything, that `identityFile` decrypts the stored object
 * `key`: reads it through `age -d` until age has unwrapped the header AND authenticated the first
 * chunk (its first output), then stops. A wrong identity is a configuration error (exit 2); a
 * header that does not parse is a damaged object; a storage error stays what it is.
 */
export async function proveIdentity(storage: StorageBackend, key: string, identityFile: string, signal?: AbortSignal): Promise<void> {
  let proven = false
  const firstOutput = new Writable({
    write(_chunk, _encoding, callback) {
      proven = true
      callback(new ProbeDone())
    },
  })
  try {
    await pipeline(await storage.get(key, {signal}), createDecryptor(identityFile), firstOutput, {signal})
  } catch (error) {
    if (proven && error instanceof ProbeDone) return
    if (!(error instanceof DamagedStreamError)) throw error
    throw identityFailure(error.message, key, identityFile) ?? new OperationError(`${key} is damaged or not an age file: ${error.message}`)
  }
}

/** age's words for "this identity cannot open it", as a configuration error naming the file (never its content). */
export function identityFailure(ageMessage: string, key: string, identityFile: string): ConfigError | undefined {
  if (/no identity matched/.test(ageMessage)) {
    return new ConfigError([{variable: 'AGE_IDENTITY_FILE', message: `the identity in ${identityFile} is not one of the recipients ${key} was encrypted to (see its sidecar's encryption.recipients fingerprints); nothing was changed`}])
  }

  // Only age's own words (after "age: error:"), never dbb's wrapping, decide this.
  if (/age: error: .*(identit|passphrase|private key)/i.test(ageMessage)) {
    return new ConfigError([{variable: 'AGE_IDENTITY_FILE', message: `age cannot use ${identityFile} as an identity (${ageMessage.replace(/^.*?\((.*)\)$/, '$1')}); passphrase-protected SSH keys need a terminal: use an age identity file for unattended restores`}])
  }

  return undefined
}

function recipientArgs(recipients: readonly string[]): string[] {
  return recipients.flatMap((recipient) => ['-r', recipient])
}

async function runAge(args: string[]): Promise<void> {
  await runTool('age', args, {}, {timeout: 10_000})
}

function ageSaid(error: {stderr?: string; message: string}): string {
  const lines = (error.stderr ?? '').split('\n').filter((line) => line.startsWith('age: error:'))
  return lines.length > 0 ? lines.map((line) => line.replace(/^age: error: /, '')).join('; ') : error.message
}
