#!/usr/bin/env bash
# `npm run demo`: dbb end to end on a fresh machine, with nothing to set up. Installs what is missing
# (as `npm test` does), starts a throwaway PostgreSQL cluster on 127.0.0.1, seeds a database "app"
# with realistic data, backs it up into a local directory with the real CLI, lists the backups,
# restores the newest into a second database "app_restored", compares the two table by table
# (row count and a checksum of every row), stops the cluster and says where the files are.
set -euo pipefail
cd "$(dirname "$0")/.."

# The supported Node, as for `npm test` (installed from the npm registry when this machine's is older).
. scripts/node-runtime.sh
echo "==> Node $(node --version) ($(command -v node))"

bash scripts/install-deps.sh

if [ -n "${PG_BIN_DIR:-}" ]; then
  bin_dir=$PG_BIN_DIR
else
  bin_dir=$(ls -d /usr/lib/postgresql/*/bin | sort -t/ -k4 -n | tail -1)
fi

# PostgreSQL refuses to run as root: then the server runs as the `postgres` OS user that Debian's
# package creates, and the demo directory is handed to it.
as_server() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

demo_dir=$(mktemp -d "${TMPDIR:-/tmp}/dbb-demo-XXXXXX")
chmod 755 "$demo_dir"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$demo_dir"
data_dir=$demo_dir/pgdata
backup_dir=$demo_dir/backups
mkdir -p "$backup_dir"
password=demo-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')
port=$(node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')

stop_cluster() { as_server "$bin_dir/pg_ctl" -D "$data_dir" -m fast -w stop >/dev/null 2>&1 || true; }
trap stop_cluster EXIT

echo "==> starting a throwaway PostgreSQL $("$bin_dir/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (data in $data_dir)"
as_server bash -c "umask 077 && printf '%s\n' '$password' > '$demo_dir/pwfile'"
as_server "$bin_dir/initdb" -D "$data_dir" -U postgres --pwfile="$demo_dir/pwfile" --auth-local=scram-sha-256 \
  --auth-host=scram-sha-256 --encoding=UTF8 --locale=C.UTF-8 --no-sync >"$demo_dir/initdb.log" 2>&1 \
  || { cat "$demo_dir/initdb.log" >&2; exit 1; }
rm -f "$demo_dir/pwfile"
cat >>"$data_dir/postgresql.conf" <<CONF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$demo_dir'
fsync = off
CONF
as_server "$bin_dir/pg_ctl" -D "$data_dir" -l "$demo_dir/server.log" -w -t 60 start >/dev/null \
  || { cat "$demo_dir/server.log" >&2; exit 1; }

# What dbb and psql read: the same DB_* settings a real database would get.
export DB_HOST=127.0.0.1 DB_PORT=$port DB_USER=postgres DB_PASSWORD=$password DB_NAME=app
export BACKUP_LOCAL_DIR=$backup_dir
# Readable logs even though this script is often piped; LOG_FORMAT=json npm run demo shows the events.
export LOG_FORMAT=${LOG_FORMAT:-plain}
export PGHOST=$DB_HOST PGPORT=$port PGUSER=postgres PGPASSWORD=$password
sql() { psql -X -q -A -t -v ON_ERROR_STOP=1 -d "$1" -c "$2"; }

echo "==> seeding database \"app\": customers (non-ASCII names), orders, jsonb events, a large object"
sql postgres "CREATE DATABASE app"
sql app "
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, city text NOT NULL, created_at timestamptz NOT NULL);
INSERT INTO customers (name, city, created_at)
  SELECT (ARRAY['Zoë Ørsted','José Müller','Łukasz Żółć','Chloé Dubois','Søren Kierkegaard','Ангелина Петрова','山田 太郎','Αλέξης Παππάς'])[1 + i % 8] || ' #' || i,
         (ARRAY['München','Kraków','São Paulo','Reykjavík','東京','Αθήνα'])[1 + i % 6],
         timestamptz '2026-01-01 00:00:00+00' + i * interval '37 minutes'
  FROM generate_series(1, 2000) AS i;
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id int NOT NULL REFERENCES customers, amount numeric(10,2) NOT NULL, note text);
INSERT INTO orders (customer_id, amount, note)
  SELECT 1 + i % 2000, round((i * 7.31) % 1000, 2), CASE WHEN i % 5 = 0 THEN 'Geschenk — bitte als Überraschung 🎁' END
  FROM generate_series(1, 20000) AS i;
CREATE TABLE events (id serial PRIMARY KEY, payload jsonb NOT NULL);
INSERT INTO events (payload)
  SELECT jsonb_build_object('type', (ARRAY['login','purchase','refund'])[1 + i % 3], 'user', 1 + i % 2000,
                            'tags', jsonb_build_array('demo', 'ü' || i), 'at', now())
  FROM generate_series(1, 5000) AS i;
CREATE TABLE documents (id serial PRIMARY KEY, title text NOT NULL, content oid NOT NULL);
INSERT INTO documents (title, content)
  VALUES ('Ein großes Dokument', lo_from_bytea(0, convert_to(repeat('Large object line — ünïcödé ✓ ', 40000), 'UTF8')));
"

# The checksum of a table: md5 over every row's text, in a fixed order; large objects by content.
fingerprint() {
  sql "$1" "
SELECT c.relname || ' ' || (xpath('/row/n/text()', query_to_xml(format('SELECT count(*) AS n FROM %I', c.relname), false, true, '')))[1]::text
       || ' ' || (xpath('/row/h/text()', query_to_xml(format('SELECT md5(coalesce(string_agg(t::text, E''\n'' ORDER BY t::text), '''')) AS h FROM %I t', c.relname), false, true, '')))[1]::text
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY c.relname;
SELECT 'large_objects ' || count(*) || ' ' || md5(coalesce(string_agg(md5(lo_get(oid)), ',' ORDER BY oid), '')) FROM pg_largeobject_metadata;"
}

dbb() { echo; echo "\$ dbb $*"; ./bin/run.js "$@"; }

echo "==> backing up \"app\" into $backup_dir"
dbb backup run
dbb backup list
dbb restore latest --target-db app_restored --force

echo
echo "==> comparing \"app\" with \"app_restored\""
fingerprint app >"$demo_dir/app.fingerprint"
fingerprint app_restored >"$demo_dir/app_restored.fingerprint"
printf '%-15s %8s  %-32s  %s\n' TABLE ROWS "CHECKSUM (md5 of all rows)" RESTORED
mismatch=0
while read -r table rows sum && read -r table2 rows2 sum2 <&3; do
  if [ "$table" = "$table2" ] && [ "$rows" = "$rows2" ] && [ "$sum" = "$sum2" ]; then verdict=same; else verdict="DIFFERENT ($rows2 rows, $sum2)"; mismatch=1; fi
  printf '%-15s %8s  %-32s  %s\n' "$table" "$rows" "$sum" "$verdict"
done <"$demo_dir/app.fingerprint" 3<"$demo_dir/app_restored.fingerprint"
if [ "$mismatch" != 0 ] || ! cmp -s "$demo_dir/app.fingerprint" "$demo_dir/app_restored.fingerprint"; then
  echo "The restored database does NOT match the original (see above)." >&2
  exit 1
fi
echo "The restored database matches the original: every table has the same rows and checksum."

echo
echo "==> stopping the cluster"
stop_cluster
trap - EXIT
echo
echo "Done. The files are in $demo_dir:"
echo "  backups:  $backup_dir (the dump <id>.sql.gz and its sidecar <id>.meta.json)"
echo "  cluster:  $data_dir (stopped; server log in $demo_dir/server.log)"
echo "Look inside with:  BACKUP_LOCAL_DIR=$backup_dir ./bin/run.js backup list"
echo "Remove them with:  rm -rf $demo_dir"
echo "Next: back up your own database (README, first screen)."
