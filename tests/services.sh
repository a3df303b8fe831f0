#!/usr/bin/env bash
# Makes sure the real services the tests talk to answer:
# - PostgreSQL: a cluster of the suite's own, `passerelle_test` on 127.0.0.1:5433, trusting
#   connections over loopback, so that nothing depends on how the machine's own cluster (if any)
#   authenticates. Created with pg_createcluster when absent, started when stopped.
# - RabbitMQ on 127.0.0.1:5672 (guest/guest).
# Installs postgresql and rabbitmq-server from Debian's packages when absent. Checks that each
# service answers a real request (`psql … select 1`, `rabbitmqctl status`), not only that its port
# is open. Exits non-zero when one cannot be made to answer.
#
# The tests read the cluster's URL from PASSERELLE_TEST_POSTGRES_URL (tests/run.sh sets it to
# this cluster's); PASSERELLE_TEST_POSTGRES_PORT moves the cluster.
set -euo pipefail

PG_PORT=${PASSERELLE_TEST_POSTGRES_PORT:-5433}
PG_CLUSTER=passerelle_test

log() { printf 'services: %s\n' "$*" >&2; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

apt_updated=0
install_pkgs() {
  log "installing $* from Debian's packages"
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# Runs CMD… every second for at most SECONDS: the first success ends it.
until_ok() { # seconds cmd…
  local i n=$1
  shift
  for ((i = 0; i < n; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  return 1
}

pg_answers() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atqc 'select 1' | grep -qx 1; }

ensure_postgres() {
  command -v pg_createcluster >/dev/null 2>&1 && command -v psql >/dev/null 2>&1 ||
    install_pkgs postgresql postgresql-client ssl-cert
  local version conf
  version=$(pg_lsclusters -h | awk -v c="$PG_CLUSTER" '$2 == c { print $1 }' | head -n 1)
  if [ -z "$version" ]; then
    version=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
    log "creating PostgreSQL $version cluster $PG_CLUSTER on port $PG_PORT"
    # A fresh Debian cluster asks for a password over TCP; the suite's own trusts loopback (and
    # only loopback: it listens on localhost alone).
    as_root pg_createcluster "$version" "$PG_CLUSTER" --port "$PG_PORT" -- \
      --auth-local=peer --auth-host=scram-sha-256 >/dev/null
    conf=/etc/postgresql/$version/$PG_CLUSTER
    as_root tee "$conf/pg_hba.conf" >/dev/null <<'EOF'
# The test suite's own cluster (tests/services.sh): trust on loopback only.
local   all all                 peer
host    all all 127.0.0.1/32    trust
host    all all ::1/128         trust
EOF
    # Each test makes its own database; a few run at once, each gateway with a pool.
    as_root tee "$conf/conf.d/passerelle_test.conf" >/dev/null <<EOF
listen_addresses = 'localhost'
port = $PG_PORT
max_connections = 300
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
  fi
  if ! pg_answers 2>/dev/null; then
    log "starting PostgreSQL $version cluster $PG_CLUSTER"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$PG_CLUSTER" start || true
  fi
  until_ok 60 pg_answers || {
    log "PostgreSQL does not answer on 127.0.0.1:$PG_PORT (psql … -c 'select 1')"
    return 1
  }
}

rabbit_answers() { as_root rabbitmqctl -q status; }

ensure_rabbitmq() {
  command -v rabbitmq-server >/dev/null 2>&1 || install_pkgs rabbitmq-server
  if ! rabbit_answers >/dev/null 2>&1; then
    log "starting RabbitMQ"
    as_root rabbitmq-server -detached || true
  fi
  until_ok 120 rabbit_answers || { log "RabbitMQ does not answer (rabbitmqctl status)"; return 1; }
  # The node answers before its listener is up: the tests connect over AMQP on 5672.
  until_ok 60 bash -c 'exec 3<>/dev/tcp/127.0.0.1/5672' || {
    log "RabbitMQ does not listen on 127.0.0.1:5672"
    return 1
  }
}

# The console's browser tests (tests/integration/console.rs) drive Debian's headless Chromium
# through its WebDriver; no tool downloads a browser of its own.
ensure_chromium() {
  [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ] && return 0
  install_pkgs chromium chromium-driver
}

ensure_postgres
ensure_rabbitmq
ensure_chromium
log "PostgreSQL (127.0.0.1:$PG_PORT, cluster $PG_CLUSTER) and RabbitMQ answer"
