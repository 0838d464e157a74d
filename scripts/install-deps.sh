#!/usr/bin/env bash
# Installs what dbb needs on a fresh Debian/Ubuntu machine or a developer's, skipping what is there:
# the supported Node (scripts/node-runtime.sh),
# the PostgreSQL server binaries (for throwaway clusters) and client tools (for dbb) via apt-get,
# the npm packages, and the build. Used by `npm test` (scripts/test.sh) and `npm run demo`.
set -euo pipefail
cd "$(dirname "$0")/.."
# Node first: npm install and the build run on the supported version (a no-op when the caller set it up).
. scripts/node-runtime.sh

have_server() { ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || [ -n "${PG_BIN_DIR:-}" ]; }
have_clients() { command -v psql >/dev/null && command -v pg_dump >/dev/null && command -v pg_basebackup >/dev/null; }

if ! have_server || ! have_clients || ! id postgres >/dev/null 2>&1 || ! command -v runuser >/dev/null; then
  echo "==> installing PostgreSQL (server binaries for throwaway clusters, client tools for dbb)"
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "PostgreSQL is missing and this is not root: install postgresql and postgresql-client (apt-get install postgresql postgresql-client), then run this again" >&2; exit 1; }
    sudo=sudo
  fi
  # Debian's package would create and start a default cluster on port 5432; dbb's tests and demo make their own.
  $sudo mkdir -p /etc/postgresql-common/createcluster.d
  echo "create_main_cluster = false" | $sudo tee /etc/postgresql-common/createcluster.d/dbb-tests.conf >/dev/null
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq postgresql postgresql-client util-linux gzip >/dev/null
fi

# COMPRESSION=zstd compresses through the zstd program (src/compress/codec-streams.ts), gzip through
# igzip (Debian's isal package) or pigz (src/compress/program-compressor.ts), and the tests run both;
# the benchmark also compares against pigz; the tests lint bin/dbb-wal (POSIX sh) with shellcheck;
# ENCRYPTION_RECIPIENTS encrypts through the age program (src/encrypt/age.ts, age-keygen makes the
# tests' keys, ssh-keygen their SSH ones). Small Debian packages, installed only when missing.
TOOLS="zstd pigz igzip shellcheck age age-keygen ssh-keygen"
PACKAGES="zstd pigz isal shellcheck age openssh-client"
missing=""
for tool in $TOOLS; do command -v "$tool" >/dev/null || missing="$missing $tool"; done
if [ -n "$missing" ]; then
  echo "==> installing$missing (packages: $PACKAGES)"
  sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "$missing missing and this is not root: apt-get install $PACKAGES, then run this again" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  # shellcheck disable=SC2086 # one word per package
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq $PACKAGES >/dev/null
fi

# Install the locked versions when node_modules is missing or older than the lockfile. `npm install`
# rather than `npm ci`: registries that only carry Linux builds of platform-specific optional
# packages (as ours does) make npm leave the other platforms out of the lockfile, and `npm ci`
# then refuses the lockfile as out of sync. `npm install` installs the same locked versions.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "==> installing npm packages"
  npm install --no-audit --no-fund
fi

echo "==> building"
npm run build --silent
