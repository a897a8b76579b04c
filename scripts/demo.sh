#!/usr/bin/env bash
# The demo: installs what is missing, starts a real three-region lab on this
# machine, runs a region-outage drill against it, prints what was measured,
# and takes the lab down. As root the regions are network namespaces;
# otherwise (or without netem) loopback addresses behind fault proxies.
set -euo pipefail
cd "$(dirname "$0")/.."
lb="$PWD/bin/lifeboat"
dir="${LAB_DIR:-/tmp/lifeboat-demo-lab}"

"$lb" lab down --dir "$dir" >/dev/null 2>&1 || true
trap '"$lb" lab down --dir "$dir" || true' EXIT

echo "== lifeboat lab up (east: primary, west: standby, witness; synchronous replication; 80ms between regions)"
"$lb" lab up --dir "$dir" --sync
echo
echo "== lifeboat lab drill region-outage: everything in east dies at once"
"$lb" lab drill region-outage --dir "$dir"
echo
echo "== the failover run, step by step"
export LIFEBOAT_TOKEN
LIFEBOAT_TOKEN=$(sed -n 's/.*"token": *"\([^"]*\)".*/\1/p' "$dir/lab.json")
witness=$(sed -n 's/^node witness *api\/dashboard //p' < <("$lb" lab status --dir "$dir"))
run=$("$lb" runs --server "$witness" | awk '$2 == "failover" {print $1; exit}')
"$lb" runs show "$run" --server "$witness"
echo "== lifeboat report $run"
"$lb" report "$run" --server "$witness"
echo
echo "(the lab puts itself back after the drill: east is active again)"
