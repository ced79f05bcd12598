# Defaults shared by every script under deploy/. Each one can be overridden from the environment.
# Sourced, never run. Paths are outside the repository so that a clone stays clean.

PACKLINE_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

# Run-time state (data directories, pid files, logs). /var/tmp survives a reboot and every user,
# including the postgres account PostgreSQL runs as when we are root, can reach it.
: "${PACKLINE_STATE_DIR:=${TMPDIR:-/var/tmp}/packline-$(id -un)}"
# Downloaded artefacts (the Kafka broker's jars, the uv binary): kept between runs.
: "${PACKLINE_CACHE_DIR:=${XDG_CACHE_HOME:-$HOME/.cache}/packline}"
: "${PACKLINE_LOG_DIR:=$PACKLINE_STATE_DIR/logs}"

: "${PACKLINE_KAFKA_VERSION:=4.1.1}"
: "${PACKLINE_KAFKA_HOST:=127.0.0.1}"
: "${PACKLINE_KAFKA_PORT:=9092}"
: "${PACKLINE_KAFKA_CONTROLLER_PORT:=9093}"
: "${PACKLINE_KAFKA_DATA_DIR:=$PACKLINE_STATE_DIR/kafka}"
: "${PACKLINE_KAFKA_HEAP:=1g}"
# A second listener that requires SASL/SCRAM-SHA-256 over TLS, as a production broker would.
: "${PACKLINE_KAFKA_SASL_PORT:=9094}"
: "${PACKLINE_BROKER_SCRAM_USER:=packline}"
: "${PACKLINE_BROKER_SCRAM_PASSWORD:=packline-dev-secret}"
# The local CA and server certificate (deploy/tls/certs.sh) for Kafka's TLS listener and
# PostgreSQL's ssl = on.
: "${PACKLINE_TLS_DIR:=$PACKLINE_STATE_DIR/tls}"
# Partitions of every Packline topic: the most replicas of a consumer that can do work at once.
: "${PACKLINE_PARTITIONS:=12}"

: "${PACKLINE_PG_HOST:=127.0.0.1}"
: "${PACKLINE_PG_PORT:=5432}"
: "${PACKLINE_PG_DATA_DIR:=$PACKLINE_STATE_DIR/postgres}"
: "${PACKLINE_PG_USER:=packline}"
: "${PACKLINE_PG_PASSWORD:=packline}"
: "${PACKLINE_PG_VERSION:=15}"

: "${PACKLINE_CALENDAR_HTTP_PORT:=8081}"
# The static staff token the local services accept (service to service, the demo, reconcile).
# The services refuse short or well-known tokens, so it has no fixed default: a random one is
# made once per state directory and kept in $PACKLINE_STATE_DIR/staff-token (mode 0600). Set
# PACKLINE_STAFF_TOKEN to choose your own (32 characters or more).
if [[ -z ${PACKLINE_STAFF_TOKEN:-} ]]; then
  if [[ ! -s $PACKLINE_STATE_DIR/staff-token ]]; then
    mkdir -p "$PACKLINE_STATE_DIR"
    # Written aside and linked into place: whoever links first wins, every reader sees it whole.
    _token_file=$(umask 077 && mktemp "$PACKLINE_STATE_DIR/staff-token.XXXXXX")
    od -An -N32 -tx1 /dev/urandom | tr -d ' \n' >"$_token_file"
    ln "$_token_file" "$PACKLINE_STATE_DIR/staff-token" 2>/dev/null || true
    rm -f "$_token_file"
    unset _token_file
  fi
  PACKLINE_STAFF_TOKEN=$(<"$PACKLINE_STATE_DIR/staff-token")
fi
: "${PACKLINE_INVOICING_HTTP_PORT:=8082}"
: "${PACKLINE_MATCHER_HTTP_PORT:=8083}"
: "${PACKLINE_CONSOLE_HTTP_PORT:=8080}"

PACKLINE_SERVICES=(calendar invoicing matcher)
PACKLINE_KAFKA_BOOTSTRAP="$PACKLINE_KAFKA_HOST:$PACKLINE_KAFKA_PORT"
# PostgreSQL runs with TLS on (deploy/postgres/postgres.sh), and libpq-style clients, asyncpg
# among them, would use it by default ("prefer"). On loopback it only costs CPU: the local
# system connects in plain text unless a URL asks for TLS (sslmode=verify-full, as in production).
: "${PGSSLMODE:=disable}"
PACKLINE_PG_ADMIN_URL="postgresql://$PACKLINE_PG_USER:$PACKLINE_PG_PASSWORD@$PACKLINE_PG_HOST:$PACKLINE_PG_PORT/postgres"

export PACKLINE_ROOT PACKLINE_STATE_DIR PACKLINE_CACHE_DIR PACKLINE_LOG_DIR \
  PACKLINE_KAFKA_VERSION PACKLINE_KAFKA_HOST PACKLINE_KAFKA_PORT PACKLINE_KAFKA_CONTROLLER_PORT \
  PACKLINE_KAFKA_DATA_DIR PACKLINE_KAFKA_HEAP PACKLINE_KAFKA_SASL_PORT PACKLINE_BROKER_SCRAM_USER \
  PACKLINE_BROKER_SCRAM_PASSWORD PACKLINE_TLS_DIR PACKLINE_PARTITIONS PACKLINE_PG_HOST \
  PACKLINE_PG_PORT PACKLINE_PG_DATA_DIR PACKLINE_PG_USER PACKLINE_PG_PASSWORD PACKLINE_PG_VERSION \
  PACKLINE_CALENDAR_HTTP_PORT PACKLINE_INVOICING_HTTP_PORT PACKLINE_MATCHER_HTTP_PORT \
  PACKLINE_CONSOLE_HTTP_PORT \
  PACKLINE_STAFF_TOKEN \
  PACKLINE_KAFKA_BOOTSTRAP PACKLINE_PG_ADMIN_URL PGSSLMODE

log() { printf '[packline] %s\n' "$*" >&2; }
die() { printf '[packline] error: %s\n' "$*" >&2; exit 1; }

# True when something accepts TCP connections on host:port.
port_open() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# True when the pid in file $1 is a live process.
pid_alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

# wait_for SECONDS DESCRIPTION COMMAND...: retry COMMAND every half second until it succeeds.
wait_for() {
  local seconds=$1 what=$2
  local deadline=$((SECONDS + seconds))
  shift 2
  until "$@"; do
    ((SECONDS < deadline)) || { log "gave up waiting for $what after $seconds s"; return 1; }
    sleep 0.5
  done
}

# stop_pid FILE NAME: SIGTERM, wait up to 30 s for a clean exit, then SIGKILL.
stop_pid() {
  local file=$1 name=$2 pid
  if ! pid_alive "$file"; then rm -f "$file"; return 0; fi
  pid=$(cat "$file")
  log "stopping $name (pid $pid)"
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then
      log "$name did not stop within 30 s; killing it"
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$file"
}
