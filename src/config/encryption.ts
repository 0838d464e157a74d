import {defineSection} from './fields'

/**
 * Client-side encryption (issue 20 item 4, src/encrypt): who can read what dbb stores
 * (ENCRYPTION_RECIPIENTS, for the commands that write) and the key that reads it back
 * (AGE_IDENTITY_FILE, for the commands that restore). Two sections: a backup never needs the
 * identity, a restore never needs the recipients.
 */
export interface EncryptionConfig {
  /** Unset: objects are stored as before, unencrypted. */
  recipients?: string[]
}

export interface DecryptionConfig {
  identityFile?: string
}

export const encryption = defineSection(['ENCRYPTION_RECIPIENTS'], (object) =>
  object.transform((data): EncryptionConfig => ({recipients: data.ENCRYPTION_RECIPIENTS})),
)

export const decryption = defineSection(['AGE_IDENTITY_FILE'], (object) =>
  object.transform((data): DecryptionConfig => ({identityFile: data.AGE_IDENTITY_FILE})),
)
