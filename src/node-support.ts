// The supported Node has one source, package.json's engines (">=24"); the image and the test runtime
// follow it (test/e2e/node-runtime.e2e.test.ts).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const ENGINES: string = require('../package.json').engines.node

/**
 * The warning for a Node older than the engines floor, or undefined. dbb still runs there (npm only
 * warns at install time, and a cron job would not see that), but the user should know what differs:
 * no built-in zstd (COMPRESSION=zstd then needs the `zstd` program), and nothing was measured or
 * tested on it.
 */
export function unsupportedNodeWarning(version: string = process.versions.node, engines: string = ENGINES): string | undefined {
  const floor = Number(/^>=\s*(\d+)/.exec(engines)?.[1])
  const major = Number(version.split('.')[0])
  if (!Number.isFinite(floor) || !Number.isFinite(major) || major >= floor) return undefined
  return (
    `dbb supports Node.js ${engines.replace(/\s+/g, '')} and this is Node ${version}. It runs, but untested: ` +
    `COMPRESSION=zstd needs the zstd program, and memory and speed are not what BENCHMARKS.md measured. ` +
    `Install Node ${floor} (README, "Install").`
  )
}
