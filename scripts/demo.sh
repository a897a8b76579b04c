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

cat <<'PLAN'

== what `lifeboat lab up` will start (coming): per region, in its own network
   namespace (or on its own loopback address with fault proxies when not root)
   - PostgreSQL 15: primary in the first region, streaming standby in the second
   - Redis: primary and replica
   - a file share, synced from the active region
   - a sample application (POST /transactions through the writer endpoint)
   - a lifeboat node (the third region is a witness): probes, quorum verdicts,
     etcd member, DNS, HTTP proxy and Postgres writer endpoint
   then `lifeboat lab drill region-outage` kills the active region and measures
   detection time, recovery time and acknowledged writes lost.

   Today, with real servers: `make test` starts PostgreSQL primary+standby and
   Redis primary+replica, three lifeboat processes forming one control plane,
   and a partition in network namespaces.
PLAN
