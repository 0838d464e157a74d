import {storageTestSuite} from '@dbb/storage-test-suite'
import type {StorageTestTarget} from '@dbb/storage-test-suite'

export {chunked, listed, readAll} from '@dbb/storage-test-suite'

/**
 * The storage conformance kit (@dbb/storage-test-suite, packages/storage-test-suite) under jest:
 * the same cases a third-party plugin runs in its own tests, for every backend dbb ships and for
 * the example plugin (test/integration/storage-kit.integration.test.ts).
 */
export function storageConformanceSuite(target: StorageTestTarget): void {
  describe(`storage contract: ${target.name}`, () => {
    storageTestSuite(test, target)
  })
}
