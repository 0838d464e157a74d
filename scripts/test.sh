#!/usr/bin/env bash
# The whole test suite, on a fresh Debian/Ubuntu machine or a developer's: installs what is
# missing (PostgreSQL server and client binaries via apt-get, npm packages; scripts/install-deps.sh),
# builds, runs jest.
# Extra arguments go to jest, e.g. `npm test -- test/unit`.
set -euo pipefail
cd "$(dirname "$0")/.."

# The supported Node (package.json engines), installed from the npm registry when this machine's is
# older, first on PATH for everything below: the build, jest, the CLI under test and its children.
. scripts/node-runtime.sh
echo "==> Node $(node --version) ($(command -v node))"

bash scripts/install-deps.sh

# Ceph RADOS Gateway: the S3 suites run against it as well as s3rver (test/reliability/s3-rgw.e2e.test.ts).
# Installed when missing; if that fails, the run fails here rather than skipping those tests.
bash scripts/rgw.sh install

# ts-jest only transpiles test files; type errors in tests and the benchmark are caught here.
echo "==> type-checking tests and the benchmark"
npx tsc -p tsconfig.test.json
npx tsc -p bench/tsconfig.json --noEmit

echo "==> running tests"
exec npx jest "$@"
