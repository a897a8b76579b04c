#!/usr/bin/env bash
# The demo: validates every example topology with the real binary and shows
# what Lifeboat makes of one (defaults filled, secrets redacted).
set -euo pipefail
cd "$(dirname "$0")/.."
lb=bin/lifeboat
export DB_PASSWORD="${DB_PASSWORD:-demo-db-password}"
export OPENAI_API_KEY="${OPENAI_API_KEY:-sk-demo-key}"

echo "== lifeboat version"
$lb version
echo
echo "== validate every example"
for f in examples/*.yaml; do
  $lb validate -c "$f"
done
echo
echo "== the minimal topology as Lifeboat reads it (secrets redacted)"
$lb config print -c examples/minimal.yaml
