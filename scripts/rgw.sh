#!/usr/bin/env bash
# A throwaway Ceph RADOS Gateway (a production S3 implementation) on 127.0.0.1, for the tests.
#
#   scripts/rgw.sh install                 install the Debian packages when missing (apt-get)
#   scripts/rgw.sh serve DIR PORT KEY SECRET
#       starts a single-node cluster (mon + mgr + one memstore OSD, auth none, pool size 1) and
#       radosgw on 127.0.0.1:PORT, all state, logs and pid files under DIR; creates the user `dbb`
#       with the access key KEY and secret SECRET; prints `READY` on stdout; then waits until its
#       stdin closes (the test runner exited or died) or it gets SIGTERM/SIGINT, and stops every
#       daemon by its pid file. On a failed start it prints the tail of every daemon log and exits 1.
#   scripts/rgw.sh stop DIR                stops the daemons of DIR by their pid files
#
# Facts behind the configuration: ../shared/HARNESS.md (checked on Debian 12, ceph 16.2).
set -euo pipefail

PACKAGES=(ceph-mon ceph-osd ceph-mgr radosgw ceph-common uuid-runtime)

have_packages() {
  command -v ceph-mon >/dev/null && command -v ceph-osd >/dev/null && command -v ceph-mgr >/dev/null &&
    command -v radosgw >/dev/null && command -v radosgw-admin >/dev/null && command -v ceph >/dev/null && command -v uuidgen >/dev/null
}

install_packages() {
  have_packages && return 0
  echo "==> installing Ceph RADOS Gateway for the S3 tests (${PACKAGES[*]})" >&2
  local sudo=""
  if [ "$(id -u)" != 0 ]; then
    command -v sudo >/dev/null || { echo "Ceph is missing and this is not root: install ${PACKAGES[*]}" >&2; exit 1; }
    sudo=sudo
  fi
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${PACKAGES[@]}" >/dev/null
  have_packages || { echo "Ceph packages were installed but their commands are still missing" >&2; exit 1; }
}

stop_daemons() {
  local dir=$1 pidfile pid
  # The gateway first (it talks to the OSD), the monitor last.
  for pidfile in "$dir"/run/client.rgw.r.pid "$dir"/run/osd.0.pid "$dir"/run/mgr.x.pid "$dir"/run/mon.a.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [ -n "$pid" ] || continue
    # A paused daemon (a test sent SIGSTOP) ignores SIGTERM until it is continued.
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
  done
  for _ in $(seq 1 50); do
    local alive=0
    for pidfile in "$dir"/run/*.pid; do
      [ -f "$pidfile" ] || continue
      pid=$(cat "$pidfile" 2>/dev/null || true)
      [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null && alive=1
    done
    [ $alive = 0 ] && return 0
    sleep 0.1
  done
  for pidfile in "$dir"/run/*.pid; do
    [ -f "$pidfile" ] || continue
    pid=$(cat "$pidfile" 2>/dev/null || true)
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  done
}

log_tails() {
  local dir=$1 log
  for log in "$dir"/log/*; do
    [ -f "$log" ] || continue
    echo "----- last lines of $log -----" >&2
    tail -n 25 "$log" >&2
  done
}


wait_for_port() {
  local port=$1 seconds=$2
  for _ in $(seq 1 $((seconds * 5))); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && return 0
    sleep 0.2
  done
  return 1
}

# Retries a command (the cluster settles for a few seconds after each daemon starts).
retry() {
  local attempts=$1
  shift
  for attempt in $(seq 1 "$attempts"); do
    "$@" && return 0
    [ "$attempt" = "$attempts" ] && return 1
    sleep 1
  done
}

serve() {
  local dir=$1 port=$2 key=$3 secret=$4
  mkdir -p "$dir"/{mon,mgr,osd,rgw,run,log}
  local fsid mon_port conf=$dir/ceph.conf
  fsid=$(uuidgen)
  # The monitor's default port: one test cluster per machine at a time (startup checks it is free).
  mon_port=6789
  if (exec 3<>"/dev/tcp/127.0.0.1/$mon_port") 2>/dev/null; then
    echo "port $mon_port is in use (another Ceph monitor?); the test cluster needs it" >&2
    return 1
  fi
  cat >"$conf" <<EOF
[global]
fsid = $fsid
mon host = 127.0.0.1
ms mon client mode = crc
auth cluster required = none
auth service required = none
auth client required = none
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
mon max pg per osd = 1000
osd crush chooseleaf type = 0
mon data avail crit = 0
mon data avail warn = 0
mon allow pool delete = true
run dir = $dir/run
admin socket = $dir/run/\$name.asok
pid file = $dir/run/\$name.pid
log file = $dir/log/\$name.log
crash dir = $dir/crash
mon cluster log file = $dir/log/cluster.log
keyring = /dev/null
[mon]
mon data = $dir/mon/\$id
[mgr]
mgr data = $dir/mgr/\$id
[osd]
osd data = $dir/osd/\$id
osd journal = $dir/osd/\$id/journal
osd objectstore = memstore
memstore device bytes = 4294967296
osd max object size = 134217728
[client.rgw.r]
rgw frontends = beast endpoint=127.0.0.1:$port
rgw data = $dir/rgw
rgw dns name = localhost
rgw lc debug interval = 10
keyring = $dir/rgw/keyring
EOF
  export CEPH_CONF=$conf
  local ceph=(timeout 30 ceph --conf "$conf" --connect-timeout 20)

  ceph-mon --conf "$conf" --id a --mkfs --keyring /dev/null >>"$dir/log/setup.log" 2>&1
  ceph-mon --conf "$conf" --id a >>"$dir/log/setup.log" 2>&1
  wait_for_port "$mon_port" 30 || { echo "ceph-mon did not listen on 127.0.0.1:$mon_port" >&2; return 1; }
  mkdir -p "$dir/mgr/x"
  ceph-mgr --conf "$conf" --id x >>"$dir/log/setup.log" 2>&1
  retry 20 "${ceph[@]}" osd create >>"$dir/log/setup.log" 2>&1
  retry 10 "${ceph[@]}" osd crush add osd.0 1 root=default >>"$dir/log/setup.log" 2>&1
  mkdir -p "$dir/osd/0"
  ceph-osd --conf "$conf" --id 0 --mkjournal --mkfs >>"$dir/log/setup.log" 2>&1
  ceph-osd --conf "$conf" --id 0 >>"$dir/log/setup.log" 2>&1
  retry 20 "${ceph[@]}" auth get-or-create client.rgw.r osd 'allow rwx' mon 'allow rw' -o "$dir/rgw/keyring" >>"$dir/log/setup.log" 2>&1
  radosgw --conf "$conf" -n client.rgw.r -k "$dir/rgw/keyring" >>"$dir/log/setup.log" 2>&1
  wait_for_port "$port" 120 || { echo "radosgw did not listen on 127.0.0.1:$port within 120 s" >&2; return 1; }
  retry 30 timeout 30 radosgw-admin --conf "$conf" -n client.rgw.r -k "$dir/rgw/keyring" user create --uid dbb --display-name dbb \
    --access-key "$key" --secret-key "$secret" >>"$dir/log/setup.log" 2>&1
}

case "${1:-}" in
  install)
    install_packages
    ;;
  serve)
    [ $# = 5 ] || { echo "usage: $0 serve DIR PORT ACCESS_KEY SECRET_KEY" >&2; exit 2; }
    dir=$2
    have_packages || { echo "Ceph is not installed: run $0 install (npm test does)" >&2; exit 1; }
    trap 'stop_daemons "$dir"' EXIT
    trap 'exit 0' TERM INT HUP
    if ! serve "$dir" "$3" "$4" "$5"; then
      echo "RGW failed to start; daemon logs are in $dir/log" >&2
      log_tails "$dir"
      exit 1
    fi
    echo READY
    # Until the test runner closes our stdin (it exited, or was killed). In the background with
    # `wait`, so SIGTERM is handled at once (bash runs traps only between foreground commands).
    cat <&0 >/dev/null &
    reader=$!
    wait "$reader" || true
    kill "$reader" 2>/dev/null || true
    ;;
  stop)
    [ $# = 2 ] || { echo "usage: $0 stop DIR" >&2; exit 2; }
    stop_daemons "$2"
    ;;
  *)
    echo "usage: $0 install | serve DIR PORT ACCESS_KEY SECRET_KEY | stop DIR" >&2
    exit 2
    ;;
esac
