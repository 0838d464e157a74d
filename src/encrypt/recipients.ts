import {createHash} from 'node:crypto'

/**
 * ENCRYPTION_RECIPIENTS (issue 20 item 4): age recipients (`age1…`) and SSH public keys
 * (`ssh-ed25519 AAAA…`, `ssh-rsa AAAA…`), the forms the `age` program accepts with `-r`.
 * Kept free of zod and of child processes: the config layer and the WAL fast path read it.
 * Recipients are public keys: they may appear in messages; a sidecar records only fingerprints.
 */

/** bech32's alphabet; an X25519 recipient is `age1` + 58 of these (32 bytes of key + 6 of checksum). */
const AGE_RECIPIENT = /^age1[02-9ac-hj-np-z]{58}$/
/** An SSH public key line as in authorized_keys / id_*.pub: type, base64 blob, optional comment. */
const SSH_RECIPIENT = /^(ssh-ed25519|ssh-rsa) (AAAA[A-Za-z0-9+/]+={0,2})(?: .*)?$/

export type RecipientsParse = {recipients: string[]} | {problem: string}

/**
 * Splits on commas and newlines (a list pasted from a recipients file works; `#` lines are
 * comments there, as in age's own -R files) and checks each form. Problems name the position,
 * so a typo is found without echoing every key.
 */
export function parseRecipients(text: string): RecipientsParse {
  const entries = text
    .split(/[,\n]/)
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '' && !entry.startsWith('#'))
  if (entries.length === 0) return {problem: 'names no recipient (give age1… public keys or SSH public keys, separated by commas or newlines)'}
  const recipients: string[] = []
  for (const [index, entry] of entries.entries()) {
    const position = `recipient ${index + 1} of ${entries.length}`
    if (AGE_RECIPIENT.test(entry.toLowerCase())) {
      recipients.push(entry.toLowerCase())
      continue
    }

    const ssh = SSH_RECIPIENT.exec(entry.replace(/\s+/g, ' '))
    if (ssh) {
      // The comment is not part of the key: dropped, so fingerprints do not depend on it.
      recipients.push(`${ssh[1]} ${ssh[2]}`)
      continue
    }

    if (entry.startsWith('AGE-SECRET-KEY-')) return {problem: `${position} is an age SECRET key: give its public key (age-keygen -y FILE prints it), and keep the secret key out of this setting`}
    if (entry.includes('PRIVATE KEY')) return {problem: `${position} is an SSH PRIVATE key: give the public key (the .pub file)`}
    return {problem: `${position} ("${entry.slice(0, 12)}…") is neither an age public key (age1 followed by 58 bech32 characters) nor an SSH public key (ssh-ed25519 AAAA… or ssh-rsa AAAA…)`}
  }

  if (new Set(recipients).size !== recipients.length) return {problem: 'names the same recipient twice'}
  return {recipients}
}

/** What a sidecar records of a recipient: `SHA256:` + unpadded base64 of the sha256 of its canonical form (as ssh-keygen -l prints fingerprints). */
export function recipientFingerprint(recipient: string): string {
  return `SHA256:${createHash('sha256').update(recipient).digest('base64').replace(/=+$/, '')}`
}

/** The storage key suffix of an encrypted object: `….sql.gz.age`, `wal/….zst.age`. Stock age tools use the same. */
export const ENCRYPTED_SUFFIX = '.age'

export function isEncryptedKey(key: string): boolean {
  return key.endsWith(ENCRYPTED_SUFFIX)
}

/** The sidecar's record of how a stored object is encrypted. */
export interface EncryptionRecord {
  format: 'age'
  recipients: string[]
}

export function encryptionRecord(recipients: readonly string[]): EncryptionRecord {
  return {format: 'age', recipients: recipients.map((recipient) => recipientFingerprint(recipient))}
}
