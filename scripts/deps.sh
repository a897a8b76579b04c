#!/usr/bin/env bash
# Installs what Lifeboat's tests and demo need on a Debian machine with Go:
# PostgreSQL 15 (server and client), Redis, dig, iproute2 and curl. Does
# nothing for what is already there.
set -euo pipefail

need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15 postgresql-client-15)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v ip >/dev/null 2>&1 || need+=(iproute2)   # network namespaces for the partition test
command -v curl >/dev/null 2>&1 || need+=(curl)

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "deps: need root or sudo to install: ${need[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! $sudo apt-get install -y --no-install-recommends "${need[@]}" >/tmp/lifeboat-deps.log 2>&1; then
  $sudo apt-get update >>/tmp/lifeboat-deps.log 2>&1
  $sudo apt-get install -y --no-install-recommends "${need[@]}" >>/tmp/lifeboat-deps.log 2>&1 || {
    cat /tmp/lifeboat-deps.log >&2
    exit 1
  }
fi
# The packages start system-wide servers on the default ports; the tests
# start their own on free ports and do not need them.
$sudo service redis-server stop >/dev/null 2>&1 || true
