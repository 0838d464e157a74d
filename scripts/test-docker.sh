#!/usr/bin/env bash
# npm run test:docker: builds docker/Dockerfile (unchanged) in a real Docker engine and runs the
# compose walkthrough of docker-compose.local.yml plus the ways people run the image: backup via the
# API, download, `docker exec … dbb restore`, `docker stop` during a backup longer than Docker's
# default 10 s (it completes), `docker kill` mid-backup (the next start cleans up), an arbitrary uid,
# a read-only root filesystem, a 0444 pgpass secret, *_FILE secrets, and that pid 1 (tini) reaps orphans.
# Prints "N passed, N failed" last. Exit 0: all passed; 1: a check failed; 3: no engine could be
# started (the reason is printed; .ci/run reports it and goes on).
# Time (2 shared cores): first run ~10-20 min (debootstrap, stand-ins, cold image build); later runs
# 1.5-4 min, the image rebuilding in ~25 s after a source change. Every wait is bounded.
# The engine state and image cache live in $DBB_DOCKER_STATE (default ~/.cache/dbb-docker).
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
export DBB_DOCKER_STATE=${DBB_DOCKER_STATE:-${XDG_CACHE_HOME:-$HOME/.cache}/dbb-docker}
mkdir -p "$DBB_DOCKER_STATE"
. "$ROOT/scripts/docker/engine.sh"
. "$ROOT/scripts/docker/base-images.sh"

PASSED=0 FAILED=0
pass() { PASSED=$((PASSED + 1)); echo "  ok   $1"; }
fail() { FAILED=$((FAILED + 1)); echo "  FAIL $1"; [ $# -gt 1 ] && echo "$2" | tail -15 | sed 's/^/       /'; }
summary() { echo "$PASSED passed, $FAILED failed"; }

PROJECT=dbbtest$$
WORK=$(mktemp -d /tmp/dbb-docker-test.XXXXXX)
COMPOSE() { docker-compose -p "$PROJECT" -f "$ROOT/docker-compose.local.yml" --project-directory "$WORK" "$@"; }
cleanup() {
  if [ -n "${ENGINE_UP:-}" ]; then
    $DOCKER rm -f dbbtest-serve-files dbbtest-uid >/dev/null 2>&1
    COMPOSE down -v --remove-orphans >/dev/null 2>&1
  fi
  rm -rf "$WORK"
  engine_stop
}
trap cleanup EXIT

if ! engine_start; then
  echo "docker: NOT RUN: $ENGINE_PROBLEM"
  exit 3
fi
ENGINE_UP=1
SECONDS=0

base_images || { fail "base images"; summary; exit 1; }

# ---- the image, from docker/Dockerfile as it is in the tree ----
IMAGE=dbb:local
PG_CLIENT_SOURCE=${PG_CLIENT_SOURCE:-}
if [ -z "$PG_CLIENT_SOURCE" ]; then
  # apt.postgresql.org answers? Otherwise Debian's own client (the documented second way).
  if timeout 10 bash -c 'exec 3<>/dev/tcp/apt.postgresql.org/443' 2>/dev/null; then PG_CLIENT_SOURCE=pgdg; else PG_CLIENT_SOURCE=debian; fi
fi
build_start=$SECONDS
if out=$($DOCKER build --build-arg PG_CLIENT_SOURCE="$PG_CLIENT_SOURCE" -f "$ROOT/docker/Dockerfile" -t "$IMAGE" "$ROOT" 2>&1); then
  size=$($DOCKER image inspect -f '{{.Size}}' "$IMAGE")
  pass "image builds from docker/Dockerfile (PG_CLIENT_SOURCE=$PG_CLIENT_SOURCE, $((SECONDS - build_start)) s, $((size / 1000000)) MB)"
else
  fail "image builds from docker/Dockerfile" "$out"; summary; exit 1
fi

check() { # check NAME command…: passes when the command exits 0
  local name=$1 out; shift
  if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$out"; fi
}
# perl-base is Essential in Debian (in every Debian image); postgresql-client-common's Perl (perl,
# perl-modules in /usr/share/perl) is what is left out.
check "no Perl modules, npm or yarn in the image" bash -c "! $DOCKER run --rm --entrypoint sh $IMAGE -c 'ls -d /usr/share/perl/5* || command -v npm || command -v yarn'"
check "dbb --version as the image's user" $DOCKER run --rm "$IMAGE" --version
check "dbb-wal (sh foreground of archive_command/restore_command) on PATH, with the GNU stat it needs" $DOCKER run --rm --entrypoint sh "$IMAGE" -c 'command -v dbb-wal && dbb-wal push --help >/dev/null && stat -c "%d %i %s %.9Y %.9Z" /app/bin/dbb-wal | grep -Eq "^[0-9]+ [0-9]+ [0-9]+ [0-9]+\.[0-9]{9} [0-9]+\.[0-9]{9}$"'
check "the zstd program for COMPRESSION=zstd" $DOCKER run --rm --entrypoint zstd "$IMAGE" --version
check "igzip (gzip at the default level 1) writes a gzip that gunzip reads" $DOCKER run --rm --entrypoint sh "$IMAGE" -c 'echo dbb | igzip -c -1 -n | gunzip -c | grep -qx dbb'
check "the age program for ENCRYPTION_RECIPIENTS (encrypts to a fresh key)" $DOCKER run --rm --entrypoint sh "$IMAGE" -c 'age-keygen -o /tmp/k 2>/dev/null && echo dbb | age -e -r "$(age-keygen -y /tmp/k)" | age -d -i /tmp/k | grep -qx dbb'
check "dbb --version under an arbitrary uid (--user 12345:0)" $DOCKER run --rm --user 12345:0 "$IMAGE" --version
check "dbb backup list --help under an arbitrary uid, read-only root" $DOCKER run --rm --user 12345:0 --read-only "$IMAGE" backup list --help
# The compile cache the image's user filled at build time (Dockerfile): used as that user, read-only
# root included; another uid does not use it (src/compile-cache.ts) and still runs.
compile_cache_hits() { # compile_cache_hits docker-run-flags…: prints how many modules compiled from the cache
  local out
  out=$($DOCKER run --rm -e NODE_DEBUG_NATIVE=COMPILE_CACHE "$@" "$IMAGE" backup list --json 2>&1) || { echo "exit $?: $out" | tail -5; return 1; }
  printf '%s\n' "$out" | grep -c 'was accepted'
}
hits=$(compile_cache_hits) hits_ro=$(compile_cache_hits --read-only) hits_uid=$(compile_cache_hits --user 12345:0 --read-only)
if [ "${hits:-0}" -gt 100 ] 2>/dev/null && [ "${hits_ro:-0}" -gt 100 ] 2>/dev/null && [ "$hits_uid" = 0 ]; then
  pass "the image's compile cache: $hits modules from it ($hits_ro with a read-only root), none under another uid"
else
  fail "the image's compile cache is used by its user only" "image user: $hits; read-only: $hits_ro; uid 12345: $hits_uid"
fi

# ---- the compose walkthrough ----
mkdir -p "$WORK/secrets" "$WORK/backups"
chown 1000:0 "$WORK/backups"
openssl rand -hex 16 | tr -d '\n' >"$WORK/secrets/db_password"
printf 'db:5432:*:postgres:%s\n' "$(cat "$WORK/secrets/db_password")" >"$WORK/secrets/pgpass"
chmod 0444 "$WORK/secrets/pgpass" "$WORK/secrets/db_password"   # root-owned, world-readable: a 0444 secret
TOKEN=$(openssl rand -hex 32)
HTTP_PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
printf 'DBB_API_TOKEN=%s\nDBB_HTTP_PORT=%s\n' "$TOKEN" "$HTTP_PORT" >"$WORK/.env"
API="http://127.0.0.1:$HTTP_PORT"
AUTH="Authorization: Bearer $TOKEN"
DBB=${PROJECT}_dbb_1
DB=${PROJECT}_db_1

check "docker-compose up (db healthy, dbb started)" COMPOSE up -d --no-build
healthy=""
for _ in $(seq 1 60); do
  [ "$(curl -s -o /dev/null -w '%{http_code}' "$API/health")" = 200 ] && { healthy=1; break; }
  sleep 1
done
if [ -n "$healthy" ]; then pass "GET /health answers 200 (PostgreSQL reached with the 0444 pgpass secret)"; else fail "GET /health answers 200" "$(COMPOSE logs --tail 20 2>&1)"; fi

$DOCKER exec "$DB" psql -q -U postgres -d app -c "CREATE TABLE items (id int PRIMARY KEY, body text); INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 5000) g" >/dev/null

run_backup() { # POSTs a backup and waits for its job; prints the job's final JSON
  local job status
  job=$(curl -s -X POST -H "$AUTH" "$API/api/v1/backups" | node -pe 'JSON.parse(require("fs").readFileSync(0)).jobId')
  for _ in $(seq 1 120); do
    status=$(curl -s -H "$AUTH" "$API/api/v1/backups/jobs/$job")
    case "$status" in *'"succeeded"'*|*'"failed"'*) echo "$status"; return 0 ;; esac
    sleep 1
  done
  echo "$status"
}
job=$(run_backup)
case "$job" in *'"succeeded"'*) pass "POST /api/v1/backups: the job succeeds" ;; *) fail "POST /api/v1/backups: the job succeeds" "$job" ;; esac

code=$(curl -s -o "$WORK/latest.sql.gz" -w '%{http_code}' -H "$AUTH" "$API/api/v1/backups/latest/download")
if [ "$code" = 200 ] && gzip -dc "$WORK/latest.sql.gz" | grep -q -a 'PostgreSQL database dump complete'; then
  pass "GET /api/v1/backups/latest/download: a complete gzip'd pg_dump ($(stat -c %s "$WORK/latest.sql.gz") bytes)"
else
  fail "GET /api/v1/backups/latest/download" "HTTP $code"
fi
# The gzip header's XFL byte: igzip -n writes 00, pigz -1 writes 04 (fastest), Node's zlib 04 too.
xfl=$(od -An -tx1 -j8 -N1 "$WORK/latest.sql.gz" | tr -d ' ')
if [ "$xfl" = 00 ]; then pass "the image's backups at the default level are compressed by igzip (gzip header XFL 00)"; else fail "the image's backups at the default level are compressed by igzip" "XFL $xfl"; fi

# WAL in the image: gzip through igzip reading and writing the segment's file itself (src/compress/file-programs.ts).
check "wal push / wal fetch in the image as its user: gzip WAL through igzip (XFL 00), fetched back byte for byte" $DOCKER exec "$DBB" sh -c '
  set -e; d=$(mktemp -d); seg=$d/000000010000000000000042
  head -c 1048576 /dev/urandom >"$d/random"; cat "$d/random" "$d/random" >"$seg"; mkdir "$d/store"
  export STORAGE_BACKEND=local BACKUP_LOCAL_DIR="$d/store" COMPRESSION=gzip
  dbb wal push "$seg" >/dev/null
  xfl=$(od -An -tx1 -j8 -N1 "$d/store/wal/000000010000000000000042.gz" | tr -d " "); [ "$xfl" = 00 ] || { echo "XFL $xfl"; exit 1; }
  dbb wal fetch 000000010000000000000042 "$d/back" >/dev/null
  [ "$(sha256sum <"$d/back")" = "$(sha256sum <"$seg")" ] || { echo "fetched bytes differ"; exit 1; }
  rm -rf "$d"'
check "docker exec dbb restore latest --target-db restored" $DOCKER exec "$DBB" dbb restore latest --target-db restored --force
rows=$($DOCKER exec "$DB" psql -tA -U postgres -d restored -c "SELECT count(*) FROM items" 2>&1)
if [ "$rows" = 5000 ]; then pass "restored database has the 5000 rows"; else fail "restored database has the 5000 rows" "$rows"; fi

# ---- pid 1 reaps orphans: one that a `docker exec` leaves running is re-parented to the container's
# pid 1 when its parent exits; with dbb (Node) as pid 1 it stayed a zombie once it ended ----
$DOCKER exec "$DBB" sh -c 'sleep 1 </dev/null >/dev/null 2>&1 &'
sleep 3
check "an orphan re-parented to the container's pid 1 is reaped when it ends (no zombie)" $DOCKER exec "$DBB" sh -c '! grep -qs ") Z " /proc/[0-9]*/stat'
check "pid 1 is tini, with dbb serve its child" $DOCKER exec "$DBB" sh -c '[ "$(cat /proc/1/comm)" = tini ] || exit 1
  for d in /proc/[0-9]*; do
    tr "\0" " " <"$d/cmdline" 2>/dev/null | grep -Eq "(dbb|run\.js) serve" && grep -Eq "^PPid:[[:space:]]+1$" "$d/status" && exit 0
  done
  exit 1'

# ---- docker stop during a long backup: it completes within SHUTDOWN_GRACE, before Docker's SIGKILL ----
# The backup is made to last past Docker's default 10 s: its pg_dump waits on a table lock that a
# session in the db container holds until the test ends it, RELEASE_AFTER_S seconds into the stop
# (the session ends by itself after 120 s at most).
RELEASE_AFTER_S=15
hold_lock() { # ACCESS EXCLUSIVE on items in a background session; waits until it is held
  $DOCKER exec -d "$DB" psql -q -U postgres -d app -c "BEGIN; LOCK TABLE items IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(120); COMMIT;"
  local deadline=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$deadline" ]; do
    [ "$($DOCKER exec "$DB" psql -tA -U postgres -d app -c "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation WHERE c.relname = 'items' AND l.mode = 'AccessExclusiveLock' AND l.granted")" = 1 ] && return 0
    sleep 0.2
  done
  return 1
}
release_lock() {
  $DOCKER exec "$DB" psql -tA -U postgres -d app -c "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE '%LOCK TABLE items%' AND pid <> pg_backend_pid()" >/dev/null
}
dump_blocked() { # waits until pg_dump (application_name 'dbb', as dbb sets it) waits on that lock, its claim written
  local deadline=$((SECONDS + 60))
  while [ "$SECONDS" -lt "$deadline" ]; do
    [ "$($DOCKER exec "$DB" psql -tA -U postgres -d app -c "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dbb' AND wait_event_type = 'Lock'")" = 1 ] &&
      ls "$WORK/backups" | grep -q '\.partial' && return 0
    sleep 0.2
  done
  return 1
}
dumps() { ls "$WORK/backups" | grep -E '\.sql\.gz$' | sort; }

before=$(dumps)
stop_timeout=$($DOCKER inspect -f '{{.Config.StopTimeout}}' "$DBB")
if [ "${stop_timeout:-0}" -gt 30 ] 2>/dev/null; then
  pass "compose's stop_grace_period reaches the container: docker stop waits $stop_timeout s (> SHUTDOWN_GRACE 30 s)"
else
  fail "compose's stop_grace_period reaches the container" "StopTimeout: $stop_timeout"
fi
if hold_lock; then
  curl -s -X POST -H "$AUTH" "$API/api/v1/backups" >/dev/null
  if dump_blocked; then
    stop_start=$SECONDS
    $DOCKER stop "$DBB" >/dev/null &   # the container's StopTimeout, from the compose file's stop_grace_period
    stop_pid=$!
    sleep "$RELEASE_AFTER_S"
    release_lock
    wait "$stop_pid"
    stop_s=$((SECONDS - stop_start))
    exit_code=$($DOCKER inspect -f '{{.State.ExitCode}}' "$DBB")
    leftovers=$(ls -a "$WORK/backups" | grep -E '\.partial|\.tmp' || true)
    new_dump=$(comm -13 <(echo "$before") <(dumps))
    if [ "$exit_code" = 0 ] && [ "$stop_s" -gt 10 ] && [ -z "$leftovers" ] && [ -n "$new_dump" ] && [ -f "$WORK/backups/$new_dump.meta.json" ]; then
      pass "docker stop during a backup that outlasts Docker's default 10 s: it completes ($new_dump), exit 0 after $stop_s s, nothing partial left"
    else
      fail "docker stop during a long backup completes it" "exit $exit_code after $stop_s s, new dump '$new_dump', leftovers: $leftovers; $($DOCKER logs --tail 15 "$DBB" 2>&1)"
    fi
  else
    release_lock
    fail "the backup before docker stop waits on the lock" "$(ls -la "$WORK/backups")"
  fi
  $DOCKER start "$DBB" >/dev/null
  for _ in $(seq 1 60); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$API/health")" = 200 ] && break; sleep 1; done
  if [ -n "${new_dump:-}" ] && $DOCKER exec "$DBB" dbb backup list --json | node -e 'const l = JSON.parse(require("fs").readFileSync(0)); process.exit(l.some((b) => b.id === process.argv[1] && b.status === "ok") ? 0 : 1)' "$new_dump" &&
    $DOCKER exec "$DBB" dbb restore "$new_dump" --target-db stopped_restore --force >/dev/null 2>&1 &&
    [ "$($DOCKER exec "$DB" psql -tA -U postgres -d stopped_restore -c "SELECT count(*) FROM items" 2>&1)" = 5000 ]; then
    pass "the backup taken across docker stop is listed ok and restores (5000 rows)"
  else
    fail "the backup taken across docker stop is listed and restores" "$($DOCKER exec "$DBB" dbb backup list 2>&1)"
  fi
else
  fail "hold a lock on items for the long backup"
fi

# ---- docker kill (SIGKILL, as an OOM kill or a grace too short) mid-backup: the next start cleans up ----
# The killed run's claim stops beating; dbb serve cleans at start and once more when such a run is
# certainly dead (3 missed 10 s heartbeats + slack, src/backup/claim-id.ts): ~32 s after the start.
if hold_lock; then
  curl -s -X POST -H "$AUTH" "$API/api/v1/backups" >/dev/null
  dump_blocked || fail "the backup before docker kill waits on the lock" "$(ls -la "$WORK/backups")"
  $DOCKER kill "$DBB" >/dev/null
  release_lock
  killed_leftovers=$(ls "$WORK/backups" | grep -c '\.partial')
  start_at=$SECONDS
  $DOCKER start "$DBB" >/dev/null
  cleaned=""
  while [ $((SECONDS - start_at)) -lt 90 ]; do
    ls "$WORK/backups" | grep -q '\.partial' || { cleaned=1; break; }
    sleep 1
  done
  if [ "$killed_leftovers" -gt 0 ] && [ -n "$cleaned" ]; then
    pass "docker kill mid-backup left $killed_leftovers .partial object(s); the restarted sidecar removed them $((SECONDS - start_at)) s after its start (not ORPHAN_GRACE later)"
  else
    fail "the restarted sidecar removes a killed backup's leftovers" "left by the kill: $killed_leftovers; now: $(ls -a "$WORK/backups"); $($DOCKER logs --tail 10 "$DBB" 2>&1)"
  fi
  for _ in $(seq 1 60); do [ "$(curl -s -o /dev/null -w '%{http_code}' "$API/health")" = 200 ] && break; sleep 1; done
else
  fail "hold a lock on items for the killed backup"
fi

# ---- arbitrary uid, read-only root, *_FILE secrets: the image as OpenShift/Kubernetes run it ----
NET=${PROJECT}_default
printf '%s' "$TOKEN" >"$WORK/secrets/api_token"
chmod 0444 "$WORK/secrets/api_token"
mkdir -p "$WORK/backups-uid" && chmod 0770 "$WORK/backups-uid" && chown 0:0 "$WORK/backups-uid"
check "dbb backup run --user 12345:0 --read-only, DB_PASSWORD_FILE, group-0 writable /backups" \
  $DOCKER run --rm --network "$NET" --user 12345:0 --read-only --tmpfs /tmp \
    -e DB_HOST=db -e DB_NAME=app -e DB_USER=postgres -e DB_PASSWORD_FILE=/run/secrets/db_password \
    -v "$WORK/secrets/db_password:/run/secrets/db_password:ro" -v "$WORK/backups-uid:/backups" \
    "$IMAGE" backup run
if ls "$WORK/backups-uid" | grep -q '\.sql\.gz$'; then pass "the arbitrary uid's backup is in /backups ($(ls "$WORK/backups-uid" | grep -c '\.sql\.gz$') file)"; else fail "the arbitrary uid's backup is in /backups" "$(ls -la "$WORK/backups-uid")"; fi

SERVE_PORT=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')
$DOCKER run -d --name dbbtest-serve-files --network "$NET" --user 12345:0 --read-only --tmpfs /tmp \
  -p "127.0.0.1:$SERVE_PORT:8080" \
  -e DB_HOST=db -e DB_NAME=app -e DB_USER=postgres -e STORAGE_BACKEND=local \
  -e DB_PASSWORD_FILE=/run/secrets/db_password -e API_TOKEN_FILE=/run/secrets/api_token \
  -v "$WORK/secrets/db_password:/run/secrets/db_password:ro" -v "$WORK/secrets/api_token:/run/secrets/api_token:ro" \
  -v "$WORK/backups-uid:/backups" "$IMAGE" serve >/dev/null
code=""
for _ in $(seq 1 60); do
  code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$SERVE_PORT/health"); [ "$code" = 200 ] && break; sleep 1
done
list=$(curl -s -o /dev/null -w '%{http_code}' -H "$AUTH" "http://127.0.0.1:$SERVE_PORT/api/v1/backups")
denied=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer wrong-token-wrong-token" "http://127.0.0.1:$SERVE_PORT/api/v1/backups")
if [ "$code" = 200 ] && [ "$list" = 200 ] && [ "$denied" = 401 ]; then
  pass "dbb serve with API_TOKEN_FILE/DB_PASSWORD_FILE, uid 12345, read-only: /health 200, token 200, wrong token 401"
else
  fail "dbb serve with *_FILE secrets" "health $code, list $list, wrong token $denied; $($DOCKER logs --tail 10 dbbtest-serve-files 2>&1)"
fi
if $DOCKER inspect dbbtest-serve-files | grep -q -e "$TOKEN" -e "$(cat "$WORK/secrets/db_password")"; then
  fail "no secret value in docker inspect"
else
  pass "no secret value in docker inspect"
fi

echo "docker: walkthrough took $SECONDS s"
summary
[ "$FAILED" -eq 0 ]
