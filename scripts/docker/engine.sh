# Sourced by scripts/test-docker.sh: a Docker engine to talk to.
# Uses a running engine when `docker info` answers; otherwise starts dockerd with its own paths
# under $DBB_DOCKER_STATE (kept between runs: the image cache lives there) and stops it on exit.

DOCKER=${DOCKER:-docker}
# Debian's docker.io client drives BuildKit with DOCKER_BUILDKIT=1; prefer it when both are installed.
[ -x /usr/bin/docker ] && DOCKER=/usr/bin/docker
export DOCKER_BUILDKIT=1
STARTED_DOCKERD_PID=""

engine_start() {
  if $DOCKER info >/dev/null 2>&1; then
    echo "docker: using the running engine ($($DOCKER version -f '{{.Server.Version}}' 2>/dev/null))"
    return 0
  fi
  if ! command -v dockerd >/dev/null; then
    ENGINE_PROBLEM="no engine answers and dockerd is not installed (apt-get install -y docker.io docker-compose debootstrap)"
    return 1
  fi
  if [ "$(id -u)" != 0 ]; then
    ENGINE_PROBLEM="no engine answers and starting dockerd needs root"
    return 1
  fi
  local d="$DBB_DOCKER_STATE/engine"
  mkdir -p "$d/data" "$d/exec"
  export DOCKER_HOST="unix://$d/docker.sock"
  # The host's MTU is 1400 here; containers' default 1500 stalls TLS through it.
  dockerd -H "$DOCKER_HOST" --data-root "$d/data" --exec-root "$d/exec" --pidfile "$d/dockerd.pid" \
    --storage-driver overlay2 --mtu "${DBB_DOCKER_MTU:-1400}" >"$d/dockerd.log" 2>&1 &
  STARTED_DOCKERD_PID=$!
  for _ in $(seq 1 60); do
    if $DOCKER info >/dev/null 2>&1; then
      echo "docker: started dockerd (pid $STARTED_DOCKERD_PID, state in $d)"
      return 0
    fi
    if ! kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null; then break; fi
    sleep 1
  done
  ENGINE_PROBLEM="dockerd did not start: $(tail -3 "$d/dockerd.log" | tr '\n' ' ')"
  engine_stop
  return 1
}

engine_stop() {
  if [ -n "$STARTED_DOCKERD_PID" ]; then
    kill "$STARTED_DOCKERD_PID" 2>/dev/null
    for _ in $(seq 1 30); do kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || break; sleep 1; done
    echo "docker: stopped dockerd (pid $STARTED_DOCKERD_PID)"
    STARTED_DOCKERD_PID=""
  fi
}
