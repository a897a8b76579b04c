#!/usr/bin/env bash
# Drill figures for BENCHMARKS.md: a lab with synchronous replication runs
# 20 region-outage drills and 20 switchovers; a lab with asynchronous
# replication runs 20 region-outage drills. Each run's JSON goes to
# $OUT (default /tmp/lifeboat-drills), and a summary is printed.
# Regions 80 ms apart: network namespaces and netem as root on a kernel
# with netem, else loopback addresses and fault proxies (NET=netns|loopback
# forces one). RUNS=20 by default.
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${RUNS:-20}"
out="${OUT:-/tmp/lifeboat-drills}"
dir=/tmp/lifeboat-bench-lab
mkdir -p "$out"
go build -o bin/lifeboat ./cmd/lifeboat
lb="$PWD/bin/lifeboat"
"$lb" lab down --dir "$dir" >/dev/null 2>&1 || true
trap '"$lb" lab down --dir "$dir" >/dev/null 2>&1 || true' EXIT

drill() { # mode scenario
  echo "== $1: $2 × $runs"
  "$lb" lab drill "$2" --runs "$runs" --json --dir "$dir" > "$out/$1-$2.json"
  python3 - "$out/$1-$2.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
runs = d["runs"]
def fig(k):
    s = d["summary"].get(k, {})
    return "n/a" if s.get("median") is None else "median %.2fs p95 %.2fs max %.2fs (n=%d)" % (s["median"], s["p95"], s["max"], s["n"])
print("detect ", fig("detect_seconds"))
print("recover", fig("recover_seconds"))
print("errors window", fig("error_window_seconds"))
print("client errors per run:", sorted(r["client_errors"] for r in runs))
print("writes lost per run:", [r["writes_lost"] for r in runs])
print("predicted loss (s) per run:", [round(r["predicted_loss_seconds"], 3) if r["predicted_loss_seconds"] is not None else None for r in runs])
print("split-brain violations total:", d["split_brain_violations_total"], " runbooks:", sorted(set(r["runbook_status"] for r in runs)))
PY
}

"$lb" lab up --dir "$dir" --sync --latency 80ms --net "${NET:-auto}"
drill sync region-outage
drill sync switchover
"$lb" lab down --dir "$dir"
"$lb" lab up --dir "$dir" --async --latency 80ms --net "${NET:-auto}"
drill async region-outage
