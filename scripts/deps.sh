#!/usr/bin/env bash
# Installs what Lifeboat's tests and demo need on a Debian machine with Go:
# PostgreSQL 15 (server and client), Redis, dig, iproute2, curl, rsync and
# rclone (bench/files.sh compares against them), chromium (the dashboard's
# browser test), prometheus (promtool checks the alert rules) and versitygw (an S3 gateway,
# built with go install). Does
# nothing for what is already there.
set -euo pipefail

# versitygw, the S3 gateway the blob-sync tests run (internal/testenv/s3.go
# looks in $GOBIN, $(go env GOPATH)/bin and PATH): built with go install,
# skipped when that version is already there.
versitygw_mod=github.com/versity/versitygw/cmd/versitygw
versitygw_version=v1.8.0
gobin="$(go env GOBIN)"
[ -n "$gobin" ] || gobin="$(go env GOPATH | cut -d: -f1)/bin"
if ! go version -m "$gobin/versitygw" 2>/dev/null | grep -q "mod[[:space:]]*github.com/versity/versitygw[[:space:]]*$versitygw_version"; then
  echo "deps: installing versitygw $versitygw_version into $gobin"
  GOBIN="$gobin" go install "$versitygw_mod@$versitygw_version"
fi

need=()
[ -x /usr/lib/postgresql/15/bin/initdb ] || need+=(postgresql-15 postgresql-client-15)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v dig >/dev/null 2>&1 || need+=(dnsutils)
command -v ip >/dev/null 2>&1 || need+=(iproute2)   # network namespaces for the partition test
command -v curl >/dev/null 2>&1 || need+=(curl)
command -v rsync >/dev/null 2>&1 || need+=(rsync)   # bench/files.sh
command -v rclone >/dev/null 2>&1 || need+=(rclone) # bench/files.sh
command -v chromium >/dev/null 2>&1 || need+=(chromium) # the dashboard's browser test (chromedp)
command -v promtool >/dev/null 2>&1 || need+=(prometheus) # promtool checks deploy/ alert rules
command -v node >/dev/null 2>&1 || need+=(nodejs)         # node --check parses the dashboard's scripts

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
