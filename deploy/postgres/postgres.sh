#!/usr/bin/env bash
# PostgreSQL from the machine's Debian packages, in a data directory of Packline's own.
#
#   deploy/postgres/postgres.sh start              install if missing, initdb once, start, wait
#   deploy/postgres/postgres.sh stop               fast shutdown
#   deploy/postgres/postgres.sh status             exit 0 when the server accepts connections
#   deploy/postgres/postgres.sh createdb NAME...   create databases that do not exist yet
#   deploy/postgres/postgres.sh psql [ARGS]        psql as the Packline superuser
#
# The server never runs as root: when started by root it runs as the 'postgres' account that
# Debian's package creates. Settings: PACKLINE_PG_PORT, PACKLINE_PG_DATA_DIR, PACKLINE_PG_USER,
# PACKLINE_PG_PASSWORD, PACKLINE_PG_VERSION.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../lib/env.sh"

DATA="$PACKLINE_PG_DATA_DIR"
LOGFILE="$PACKLINE_LOG_DIR/postgres.log"
PG_BIN="/usr/lib/postgresql/$PACKLINE_PG_VERSION/bin"

install_if_missing() {
  [[ -x "$PG_BIN/postgres" ]] && command -v psql >/dev/null && return 0
  [[ $(id -u) -eq 0 ]] || die "PostgreSQL $PACKLINE_PG_VERSION is missing; install postgresql-$PACKLINE_PG_VERSION (root needed)"
  log "installing postgresql-$PACKLINE_PG_VERSION from the Debian packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  # The package's own cluster is not used; we run our own data directory below.
  apt-get install -y -qq --no-install-recommends "postgresql-$PACKLINE_PG_VERSION" \
    "postgresql-client-$PACKLINE_PG_VERSION" >&2
}

# Run a command as the account that owns the data directory.
as_owner() {
  if [[ $(id -u) -eq 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi
}

psql_admin() {
  PGPASSWORD="$PACKLINE_PG_PASSWORD" psql -X -q -v ON_ERROR_STOP=1 -h "$PACKLINE_PG_HOST" \
    -p "$PACKLINE_PG_PORT" -U "$PACKLINE_PG_USER" "$@"
}

ready() { "$PG_BIN/pg_isready" -q -h "$PACKLINE_PG_HOST" -p "$PACKLINE_PG_PORT"; }

init_cluster() {
  [[ -f "$DATA/PG_VERSION" ]] && return 0
  log "creating a PostgreSQL cluster in $DATA"
  mkdir -p "$(dirname "$DATA")" "$DATA" "$PACKLINE_LOG_DIR"
  chmod 755 "$PACKLINE_STATE_DIR" "$(dirname "$DATA")"
  chmod 700 "$DATA"
  local pwfile
  pwfile=$(mktemp)
  printf '%s\n' "$PACKLINE_PG_PASSWORD" >"$pwfile"
  if [[ $(id -u) -eq 0 ]]; then chown postgres: "$DATA" "$pwfile"; fi
  as_owner "$PG_BIN/initdb" -D "$DATA" -U "$PACKLINE_PG_USER" --pwfile="$pwfile" \
    --auth-host=scram-sha-256 --auth-local=peer --encoding=UTF8 --locale=C.UTF-8 >/dev/null
  rm -f "$pwfile"
  cat >>"$DATA/postgresql.conf" <<CONF
# Packline: loopback only, enough connections for three services with pools and the tests.
listen_addresses = '$PACKLINE_PG_HOST'
max_connections = 300
shared_buffers = 256MB
unix_socket_directories = '$DATA'
CONF
}

# TLS with the local CA's server certificate (deploy/tls/certs.sh); plain connections still work,
# a client that asks for sslmode=verify-full gets a verified TLS connection. PostgreSQL wants
# the key owned by its account and readable by no one else, so both files are copied.
tls_options() {
  local tls
  tls=$("$PACKLINE_ROOT/deploy/tls/certs.sh")
  install -m 600 "$tls/server.key" "$DATA/server.key"
  install -m 644 "$tls/server.pem" "$DATA/server.crt"
  if [[ $(id -u) -eq 0 ]]; then chown postgres: "$DATA/server.key" "$DATA/server.crt"; fi
  echo "-c ssl=on -c ssl_cert_file=$DATA/server.crt -c ssl_key_file=$DATA/server.key"
}

start() {
  install_if_missing
  init_cluster
  if ready; then
    log "PostgreSQL already accepts connections on $PACKLINE_PG_HOST:$PACKLINE_PG_PORT"
    return 0
  fi
  touch "$LOGFILE"
  if [[ $(id -u) -eq 0 ]]; then chown postgres: "$LOGFILE"; fi
  log "starting PostgreSQL $PACKLINE_PG_VERSION on $PACKLINE_PG_HOST:$PACKLINE_PG_PORT (log: $LOGFILE)"
  as_owner "$PG_BIN/pg_ctl" -D "$DATA" -l "$LOGFILE" -o "-p $PACKLINE_PG_PORT $(tls_options)" \
    -w -t 60 start >/dev/null
  wait_for 60 "PostgreSQL on port $PACKLINE_PG_PORT" ready
}

stop() {
  [[ -f "$DATA/postmaster.pid" ]] || return 0
  log "stopping PostgreSQL"
  as_owner "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w -t 60 stop >/dev/null || true
}

createdb() {
  local name
  for name in "$@"; do
    if [[ -z $(psql_admin -d postgres -tAc "SELECT 1 FROM pg_database WHERE datname = '$name'") ]]; then
      log "creating database $name"
      psql_admin -d postgres -c "CREATE DATABASE \"$name\""
    fi
  done
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) ready ;;
  createdb) shift; createdb "$@" ;;
  psql) shift; psql_admin "$@" ;;
  *) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
