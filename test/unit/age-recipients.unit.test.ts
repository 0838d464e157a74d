import {backupIdOfKey, isBackupId, newBackupId, parseBackupId} from '../../src/backup/naming'
import {codecOfKey} from '../../src/compress/codecs'
import {encryptionRecord, parseRecipients, recipientFingerprint} from '../../src/encrypt/recipients'
import {walKey, walKeys, walNameOfKey} from '../../src/wal/segments'
import {identityFailure} from '../../src/encrypt/age'

const AGE = 'age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p'
const SSH = 'ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN'

describe('ENCRYPTION_RECIPIENTS parsing', () => {
  it('takes age and SSH recipients separated by commas or newlines; comments and SSH key comments are dropped', () => {
    expect(parseRecipients(`${AGE},\n# the recovery key\n${SSH} alice@laptop\n`)).toEqual({recipients: [AGE, SSH]})
    expect(parseRecipients(AGE.toUpperCase())).toEqual({recipients: [AGE]})
  })

  it('names the position of a malformed recipient, and says what a pasted secret key is', () => {
    expect(parseRecipients(`${AGE},age1short`)).toEqual({problem: expect.stringMatching(/^recipient 2 of 2 \("age1short…"\) is neither an age public key/)})
    expect(parseRecipients('AGE-SECRET-KEY-1QYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQSZQGPQYQS')).toEqual({problem: expect.stringMatching(/is an age SECRET key/)})
    expect(parseRecipients('-----BEGIN OPENSSH PRIVATE KEY-----')).toEqual({problem: expect.stringMatching(/SSH PRIVATE key/)})
    expect(parseRecipients(' , ')).toEqual({problem: expect.stringMatching(/names no recipient/)})
    expect(parseRecipients(`${AGE},${AGE}`)).toEqual({problem: 'names the same recipient twice'})
  })

  it('fingerprints are SHA256: + unpadded base64, the same with or without an SSH comment, never the key', () => {
    const fingerprint = recipientFingerprint(AGE)
    expect(fingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/)
    expect(fingerprint).not.toContain(AGE.slice(4, 20))
    const parsed = parseRecipients(`${SSH} bob@host`) as {recipients: string[]}
    expect(encryptionRecord(parsed.recipients)).toEqual({format: 'age', recipients: [recipientFingerprint(SSH)]})
  })
})

describe('encrypted backup ids', () => {
  it('end in .age after the codec, parse back, and are backups (list/prune/restore see them)', async () => {
    const id = await newBackupId('backup', new Date('2026-12-03T02:00:00Z'), async () => false, 'sql', 'zstd', true)
    expect(id).toBe('backup_20261203T020000Z.sql.zst.age')
    expect(parseBackupId(id)).toEqual({prefix: 'backup', timestamp: '20261203T020000Z', sequence: 1, kind: 'sql', codec: 'zstd', encrypted: true})
    expect(codecOfKey(id)).toBe('zstd')
    expect(codecOfKey('wal/000000010000000000000001.gz.age')).toBe('gzip')
    expect(isBackupId('backup_20261203T020000Z-2.tar.gz.age')).toBe(true)
    expect(isBackupId('backup_20261203T020000Z.sql.gz.age.age')).toBe(false)
    expect(backupIdOfKey(`${id}.meta.json`)).toBe(id)
    expect(backupIdOfKey(`${id}.0123abcd.partial`)).toBe(id)
  })
})

describe('encrypted WAL keys', () => {
  it('are wal/<name>.<codec>.age, name their WAL file (retention, check), and a fetch tries every form, the preferred first', () => {
    const name = '000000010000000000000003'
    expect(walKey(name, 'gzip', true)).toBe(`wal/${name}.gz.age`)
    expect(walNameOfKey(`wal/${name}.zst.age`)).toBe(name)
    expect(walNameOfKey('wal/00000002.history.gz.age')).toBe('00000002.history')
    expect(walNameOfKey(`wal/${name}.age`)).toBeUndefined()
    expect(walKeys(name, 'zstd', true)).toEqual([`wal/${name}.zst.age`, `wal/${name}.zst`, `wal/${name}.gz.age`, `wal/${name}.gz`])
    expect(walKeys(name)).toEqual([`wal/${name}.gz`, `wal/${name}.gz.age`, `wal/${name}.zst`, `wal/${name}.zst.age`])
  })
})

describe('age errors: a wrong identity (exit 2) or a damaged object', () => {
  it('reads only age\'s own words: a damaged header is not taken for an identity problem', () => {
    const key = 'backup_20261203T020000Z.sql.gz.age'
    const wrong = identityFailure('not a valid age stream (age exit code 1: age: error: no identity matched any of the recipients | age: report …)', key, '/k.txt')
    expect(wrong?.exitCode).toBe(2)
    expect(wrong?.message).toMatch(/^AGE_IDENTITY_FILE: the identity in \/k\.txt is not one of the recipients/)
    expect(identityFailure('not a valid age stream (age exit code 1: age: error: failed to read header: parsing age header: malformed body line)', key, '/k.txt')).toBeUndefined()
    expect(identityFailure('not a valid age stream (age exit code 1: age: error: reading "/k.txt": failed to read private keys: no secret keys found)', key, '/k.txt')?.exitCode).toBe(2)
  })
})
