/**
 * The storage contract is declared once, in the `@dbb/storage-contract` package
 * (packages/storage-contract), which plugin authors install; core reads it through this module.
 */
export * from '@dbb/storage-contract'
