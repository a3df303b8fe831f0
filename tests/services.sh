#!/usr/bin/env bash
# Makes sure the real services the tests talk to are running: RabbitMQ (127.0.0.1:5672, guest/guest)
# and PostgreSQL (127.0.0.1:5432, trust auth). Starts them when installed but stopped; installs them
# from Debian's packages when absent. Exits non-zero when one cannot be made to answer.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # port seconds
  local i
  for ((i = 0; i < $2; i++)); do port_open "$1" && return 0; sleep 1; done
  return 1
}

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }

apt_updated=0
install_pkgs() {
  log "installing $* from Debian's packages"
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

ensure_postgres() {
  port_open 5432 && return 0
  command -v pg_ctlcluster >/dev/null 2>&1 || install_pkgs postgresql
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  log "starting PostgreSQL $version"
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  wait_port 5432 60 || { log "PostgreSQL does not answer on 127.0.0.1:5432"; return 1; }
  # A fresh Debian cluster has neither trust auth on TCP nor the role/database the tests use.
  as_root su postgres -c "psql -tAc \"SELECT 1 FROM pg_roles WHERE rolname='root'\" | grep -q 1 || createuser -s root" || true
  as_root su postgres -c "psql -tAc \"SELECT 1 FROM pg_database WHERE datname='test'\" | grep -q 1 || createdb test" || true
}

ensure_rabbitmq() {
  port_open 5672 && return 0
  command -v rabbitmq-server >/dev/null 2>&1 || install_pkgs rabbitmq-server
  log "starting RabbitMQ"
  as_root rabbitmq-server -detached || true
  wait_port 5672 120 || { log "RabbitMQ does not answer on 127.0.0.1:5672"; return 1; }
}

ensure_postgres
ensure_rabbitmq
log "PostgreSQL and RabbitMQ answer"
