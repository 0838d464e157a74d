// Read at runtime so the version has one source, package.json.
// eslint-disable-next-line @typescript-eslint/no-require-imports
export const VERSION: string = require('../package.json').version
