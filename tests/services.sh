#!/usr/bin/env bash
# Makes sure the real services the tests talk to answer:
# - PostgreSQL: a cluster of the suite's own, `passerelle_test` on 127.0.0.1:5433, trusting
#   connections over loopback, so that nothing depends on how the machine's own cluster (if any)
#   authenticates. Created with pg_createcluster when absent, started when stopped. It speaks TLS
#   with a self-signed certificate of its own naming localhost (and nothing else), so that
#   `sslmode=verify-full` by name works and by address is refused, on any machine: Debian's
#   snakeoil certificate names the machine's host name, which is localhost only by chance.
# - RabbitMQ on 127.0.0.1:5672 (guest/guest).
# Installs postgresql and rabbitmq-server (and chromium, chromium-driver) from Debian's packages
# when absent. Checks that each service answers a real request (`psql … select 1`, over TLS too,
# `rabbitmqctl status`), not only that its port is open. Exits non-zero when one cannot be made to
# answer. Run again, it changes nothing; it needs no systemd (a chroot, a container).
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
  if [ "$apt_updated" = 0 ]; then
    apt_updated=1
    # A failed update (a mirror or some third-party source out of reach) need not be the end:
    # the package lists already on the machine may name these packages. If they do not, the
    # install below fails, and that is the error that counts.
    as_root apt-get update -qq ||
      log "apt-get update failed: installing from the package lists already on this machine"
  fi
  # env, not a variable before as_root: sudo would drop it from the environment.
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >/dev/null || {
    log "could not install $* (apt-get install failed)"
    return 1
  }
}

# Runs CMD… every second for at most SECONDS: the first success ends it.
until_ok() { # seconds cmd…
  local i n=$1
  shift
  for ((i = 0; i < n; i++)); do "$@" >/dev/null 2>&1 && return 0; sleep 1; done
  return 1
}

pg_answers() { psql -h 127.0.0.1 -p "$PG_PORT" -U postgres -d postgres -Atqc 'select 1' | grep -qx 1; }

# What the suite's TLS test (tests/integration/hardening.rs) does: verify-full, by name, with the
# server's own certificate as the root.
pg_answers_tls() { # cert
  local by_name="host=localhost port=$PG_PORT user=postgres dbname=postgres"
  psql "$by_name sslmode=verify-full sslrootcert=$1" \
    -Atqc 'select ssl from pg_stat_ssl where pid = pg_backend_pid()' | grep -qx t
}

# Gives the cluster (config dir $1) its own certificate and the settings that use it, when they are
# missing (a new cluster, or one made before this script did TLS) or the certificate expires within
# a day; pg_tls_changed=1 when it changed anything, so that a running cluster reloads (ssl settings
# need no restart).
pg_tls_changed=0
ensure_pg_tls() { # conf_dir
  local crt=$1/$PG_CLUSTER.crt key=$1/$PG_CLUSTER.key file=$1/conf.d/$PG_CLUSTER.conf
  local want have
  command -v openssl >/dev/null 2>&1 || install_pkgs openssl
  if ! [ -s "$crt" ] || ! as_root test -s "$key" ||
    ! openssl x509 -in "$crt" -noout -checkend 86400 >/dev/null 2>&1; then
    log "making $crt: a self-signed certificate for localhost"
    # Made empty with their modes first: the key is never readable by others, not even for a moment.
    as_root install -m 0600 -o postgres -g postgres /dev/null "$key"
    as_root install -m 0644 -o postgres -g postgres /dev/null "$crt"
    # DNS:localhost alone (no IP address): verify-full to 127.0.0.1 must be refused. CA:FALSE: it is
    # its own root for libpq, but rustls (webpki) refuses a CA certificate as a server's.
    as_root openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
      -subj /CN=localhost -addext subjectAltName=DNS:localhost \
      -addext basicConstraints=critical,CA:FALSE -addext extendedKeyUsage=serverAuth \
      -keyout "$key" -out "$crt" 2>/dev/null
    pg_tls_changed=1
  fi
  # PostgreSQL will not start with a key others can read.
  if [ "$(as_root stat -c '%a %U' "$key")" != "600 postgres" ]; then
    log "making $key mode 0600, owned by postgres"
    as_root chown postgres:postgres "$key"
    as_root chmod 0600 "$key"
    pg_tls_changed=1
  fi
  # The conf.d file ends with the TLS settings (they override postgresql.conf's snakeoil ones);
  # its other lines stay as they are.
  want=$({
    grep -vE '^[[:space:]]*ssl(_cert_file|_key_file)?[[:space:]]*=|^# TLS: ' "$file" 2>/dev/null ||
      true
    echo "# TLS: the cluster's own certificate (tests/services.sh), naming localhost only."
    echo "ssl = on"
    echo "ssl_cert_file = '$crt'"
    echo "ssl_key_file = '$key'"
  })
  have=$(cat "$file" 2>/dev/null || true)
  if [ "$want" != "$have" ]; then
    log "turning on TLS in $file"
    printf '%s\n' "$want" | as_root tee "$file" >/dev/null
    pg_tls_changed=1
  fi
}

ensure_postgres() {
  # The cluster listens on localhost and its certificate names it: without that name (no
  # /etc/hosts, as in a bare debootstrap root) it would not even start, and say so only in its log.
  getent hosts localhost >/dev/null || {
    log "localhost does not resolve: add '127.0.0.1 localhost' to /etc/hosts"
    return 1
  }
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
  conf=/etc/postgresql/$version/$PG_CLUSTER
  ensure_pg_tls "$conf"
  if ! pg_answers 2>/dev/null; then
    log "starting PostgreSQL $version cluster $PG_CLUSTER"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$PG_CLUSTER" start || true
  elif [ "$pg_tls_changed" = 1 ]; then
    log "reloading PostgreSQL $version cluster $PG_CLUSTER (its TLS settings changed)"
    as_root pg_ctlcluster --skip-systemctl-redirect "$version" "$PG_CLUSTER" reload
  fi
  until_ok 60 pg_answers || {
    log "PostgreSQL does not answer on 127.0.0.1:$PG_PORT (psql … -c 'select 1')"
    return 1
  }
  # A reload is applied a moment after pg_ctlcluster returns.
  until_ok 10 pg_answers_tls "$conf/$PG_CLUSTER.crt" || {
    log "PostgreSQL does not answer over TLS with verify-full to localhost:$PG_PORT, root" \
      "$conf/$PG_CLUSTER.crt (see /var/log/postgresql/postgresql-$version-$PG_CLUSTER.log)"
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
