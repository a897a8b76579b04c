#!/usr/bin/env bash
# Side-by-side benchmark of Lifeboat's data plane against its peers, on
# loopback, on one machine:
#
#   HTTP      Lifeboat's front door (traffic.http) vs HAProxy 2.6 vs the
#             backend direct                           (wrk)
#   DNS       Lifeboat's DNS server (traffic.dns) vs PowerDNS Authoritative
#             4.7, bind backend, LUA ifurlup record     (dnsperf)
#             anchor: the same PowerDNS answering a static A record
#   Postgres  Lifeboat's writer endpoint (traffic.postgres, relay auto: the
#             kernel carries the bytes, as root) vs PostgreSQL 15
#             direct                                   (pgbench -S)
#             the same endpoint with relay: user (copied by Lifeboat)
#             anchor: HAProxy relaying TCP to the same server
#
# Everything runs from a temporary directory on free loopback ports and is
# stopped on exit. Systems under test alternate (the order rotates every
# round); each figure is the median of ROUNDS runs of DURATION seconds,
# after one short warm-up run per system that is not counted.
#
# Usage: bench/traffic.sh            (from anywhere; run as root: PostgreSQL
#                                     runs as user postgres via runuser)
# Environment: ROUNDS (3), DURATION (10, seconds per run), WARMUP (2),
#              PARTS ("http dns pg": which benchmarks run),
#              KEEP=1 keeps the temporary directory (logs, configs).
# Needs: go, wrk, dnsperf, dig, curl, jq, ss, haproxy, pdns_server with the
# bind backend, PostgreSQL 15 (initdb, pg_ctl, pgbench, psql, createdb).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH="$ROOT/bench"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
WARMUP=${WARMUP:-2}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
HOST_HEADER=bench.example
PARTS=${PARTS:-http dns pg}
part() { [[ " $PARTS " == *" $1 "* ]]; }

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

for tool in go wrk dnsperf dig curl jq ss haproxy pdns_server runuser; do
	command -v "$tool" >/dev/null || die "$tool is not installed"
done
for tool in initdb pg_ctl pgbench psql createdb; do
	[[ -x $PGBIN/$tool ]] || die "$PGBIN/$tool is missing (set PGBIN)"
done
[[ $(id -u) -eq 0 ]] || die "run as root (PostgreSQL is started as user postgres through runuser)"

T=$(mktemp -d /tmp/lifeboat-bench.XXXXXX)
chmod 755 "$T"
PIDS=()
PG_STARTED=

cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	local i
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		kill "${PIDS[i]}" 2>/dev/null
	done
	for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
		wait "${PIDS[i]}" 2>/dev/null
	done
	if [[ -n $PG_STARTED ]]; then
		runuser -u postgres -- "$PGBIN/pg_ctl" stop -D "$T/pg" -m fast -w >/dev/null 2>&1
	fi
	if [[ ${KEEP:-} == 1 ]]; then
		log "kept $T"
	else
		rm -rf "$T"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# free_port VAR: a TCP and UDP port free on every loopback address, not
# handed out before.
declare -A TAKEN=()
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 40000))
		[[ -n ${TAKEN[$p]:-} ]] && continue
		if [[ -z $(ss -Htanu "( sport = :$p )") ]]; then
			TAKEN[$p]=1
			printf -v "$1" '%s' "$p"
			return
		fi
	done
}

# render TEMPLATE OUT: replaces @NAME@ with $NAME for every placeholder.
render() {
	local text name
	text=$(<"$1")
	for name in $(grep -o '@[A-Z_]*@' "$1" | sort -u | tr -d @); do
		[[ -n ${!name:-} ]] || die "render $1: $name is not set"
		text=${text//@$name@/${!name}}
	done
	printf '%s\n' "$text" >"$2"
}

# wait_for DESCRIPTION SECONDS COMMAND...: retries COMMAND every 0.2 s.
wait_for() {
	local what=$1 secs=$2
	shift 2
	local deadline=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < deadline)) || die "$what: not ready after ${secs}s"
		sleep 0.2
	done
}

# cpu_ticks PID: user + system clock ticks the process has used.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
CLK_TCK=$(getconf CLK_TCK)

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {print v[int((NR + 1) / 2)]}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "" || b == 0) printf "n/a"; else printf "%.2f", a / b}'; }

# rotate N ITEMS...: the items starting at index N mod count.
rotate() {
	local n=$1
	shift
	local items=("$@") i out=()
	for ((i = 0; i < ${#items[@]}; i++)); do
		out+=("${items[(i + n) % ${#items[@]}]}")
	done
	echo "${out[@]}"
}

# ---------------------------------------------------------------- build
cd "$ROOT"
log "building bin/lifeboat and the backend"
go build -o bin/lifeboat ./cmd/lifeboat
go build -o "$T/backend" ./bench/backend
LIFEBOAT="$ROOT/bin/lifeboat"

free_port BACKEND_PORT
free_port API_PORT
free_port LB_HTTP_PORT
free_port LB_DNS_PORT
free_port LB_PG_PORT
free_port LB_PGU_PORT
free_port HAPROXY_PORT
free_port HAPROXY_PG_PORT
free_port PDNS_PORT
free_port PG_PORT
DIR=$T

# ---------------------------------------------------------------- backends
# east and west on the same port of two loopback addresses, so that the
# PowerDNS URL check (one URL, several addresses) probes both.
"$T/backend" -listen "127.0.0.1:$BACKEND_PORT" >"$T/backend-east.log" 2>&1 &
PIDS+=($!)
"$T/backend" -listen "127.0.0.2:$BACKEND_PORT" >"$T/backend-west.log" 2>&1 &
PIDS+=($!)
wait_for "backend east" 10 curl -sf "http://127.0.0.1:$BACKEND_PORT/healthz"
wait_for "backend west" 10 curl -sf "http://127.0.0.2:$BACKEND_PORT/healthz"

# ---------------------------------------------------------------- postgres
log "starting PostgreSQL 15 on 127.0.0.1:$PG_PORT; pgbench -i -s 10"
mkdir -p "$T/pg" "$T/pgsock"
chown postgres: "$T/pg" "$T/pgsock"
runuser -u postgres -- "$PGBIN/initdb" -D "$T/pg" -A trust -U postgres --no-sync >"$T/initdb.log" 2>&1 ||
	die "initdb: see $T/initdb.log"
runuser -u postgres -- "$PGBIN/pg_ctl" start -D "$T/pg" -w -l "$T/pg/server.log" \
	-o "-c listen_addresses=127.0.0.1 -p $PG_PORT -c unix_socket_directories=$T/pgsock -c max_connections=50" \
	>/dev/null || die "pg_ctl start: see $T/pg/server.log"
PG_STARTED=1
"$PGBIN/createdb" -h 127.0.0.1 -p "$PG_PORT" -U postgres bench
"$PGBIN/pgbench" -i -s 10 -q -h 127.0.0.1 -p "$PG_PORT" -U postgres bench >"$T/pgbench-init.log" 2>&1 ||
	die "pgbench -i: see $T/pgbench-init.log"

# ---------------------------------------------------------------- lifeboat
render "$BENCH/lifeboat.yaml.tmpl" "$T/lifeboat.yaml"
"$LIFEBOAT" serve -c "$T/lifeboat.yaml" --node bench --data-dir "$T/data" >"$T/lifeboat.out" 2>"$T/lifeboat.log" &
LB_PID=$!
PIDS+=("$LB_PID")
lifeboat_ready() {
	"$LIFEBOAT" status --server "http://127.0.0.1:$API_PORT" --json --timeout 2s | jq -e '
		([.services[] | select(.name == "web") | .endpoints[] | .health] | length == 2 and all(. == "up"))
		and ([.services[] | select(.name == "db") | .endpoints[] | select(.region == "east") | .health] == ["up"])'
}
log "waiting for lifeboat's probes: web east+west and db east up"
wait_for "lifeboat serve (see $T/lifeboat.log)" 30 lifeboat_ready

# ---------------------------------------------------------------- haproxy
render "$BENCH/haproxy.cfg.tmpl" "$T/haproxy.cfg"
haproxy -c -q -f "$T/haproxy.cfg" || die "haproxy config"
haproxy -db -f "$T/haproxy.cfg" >"$T/haproxy.log" 2>&1 &
HA_PID=$!
PIDS+=("$HA_PID")

# ---------------------------------------------------------------- powerdns
mkdir -p "$T/pdns"
DIR=$T/pdns
render "$BENCH/pdns.conf.tmpl" "$T/pdns/pdns.conf"
render "$BENCH/named.conf.tmpl" "$T/pdns/named.conf"
render "$BENCH/bench.example.zone.tmpl" "$T/pdns/bench.example.zone"
pdns_server --config-dir="$T/pdns" >"$T/pdns.log" 2>&1 &
PDNS_PID=$!
PIDS+=("$PDNS_PID")

# ---------------------------------------------------------------- checks
http_ok() { [[ $(curl -sf -H "Host: $HOST_HEADER" "$1") == ok ]]; }
dns_ok() { [[ $(dig +short +time=1 +tries=1 @127.0.0.1 -p "$1" "${2:-www}.bench.example" A) == 127.0.0.1 ]]; }
wait_for "direct HTTP" 10 http_ok "http://127.0.0.1:$BACKEND_PORT/"
wait_for "lifeboat HTTP" 10 http_ok "http://127.0.0.1:$LB_HTTP_PORT/"
wait_for "haproxy HTTP (see $T/haproxy.log)" 10 http_ok "http://127.0.0.1:$HAPROXY_PORT/"
wait_for "lifeboat DNS" 10 dns_ok "$LB_DNS_PORT"
wait_for "pdns DNS (see $T/pdns.log)" 15 dns_ok "$PDNS_PORT"
wait_for "pdns DNS, static record" 5 dns_ok "$PDNS_PORT" static
pg_ok() { [[ $("$PGBIN/psql" -h 127.0.0.1 -p "$1" -U postgres -d bench -Atc 'select count(*) from pgbench_branches') == 10 ]]; }
wait_for "postgres direct" 10 pg_ok "$PG_PORT"
wait_for "postgres through lifeboat" 10 pg_ok "$LB_PG_PORT"
wait_for "postgres through lifeboat, relay user" 10 pg_ok "$LB_PGU_PORT"
wait_for "postgres through haproxy" 10 pg_ok "$HAPROXY_PG_PORT"
if part pg; then
	# relay: auto, as root: the kernel's NAT takes the writer's connections.
	lifeboat_nat() {
		"$LIFEBOAT" status --server "http://127.0.0.1:$API_PORT" --json --timeout 2s |
			jq -e --arg l "127.0.0.1:$LB_PG_PORT" '[.traffic.postgres[] | select(.listen == $l) | .nat] == [true]' >/dev/null
	}
	wait_for "lifeboat's writer endpoint on the kernel's NAT (see $T/lifeboat.log)" 10 lifeboat_nat
fi
# HAProxy must have seen both servers healthy (two check intervals).
sleep 2
log "all answering: www.bench.example A = 127.0.0.1 from lifeboat and pdns; HTTP 200 ok through lifeboat and haproxy"

declare -A RES=()  # RES[kind/system] = space-separated per-round figures
add() { RES[$1]="${RES[$1]:-} $2"; }

# ---------------------------------------------------------------- HTTP
declare -A HTTP_URL=([direct]="http://127.0.0.1:$BACKEND_PORT/" [lifeboat]="http://127.0.0.1:$LB_HTTP_PORT/" [haproxy]="http://127.0.0.1:$HAPROXY_PORT/")
declare -A HTTP_PID=([direct]="" [lifeboat]="$LB_PID" [haproxy]="$HA_PID")
# run_wrk SYSTEM SECONDS OUT
run_wrk() { wrk -t1 -c32 -d"$2s" --latency -H "Host: $HOST_HEADER" "${HTTP_URL[$1]}" >"$3" 2>&1; }
http_round() {
	local sys=$1 r=$2 out="$T/wrk-$1-$2.txt" pid=${HTTP_PID[$1]} c0=0 c1=0 rps p99 errs
	[[ -n $pid ]] && c0=$(cpu_ticks "$pid")
	run_wrk "$sys" "$DURATION" "$out"
	[[ -n $pid ]] && c1=$(cpu_ticks "$pid")
	rps=$(awk '/^Requests\/sec:/ {print $2}' "$out")
	p99=$(awk '$1 == "99%" {v = $2; u = v; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", v);
		m = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : -1; printf "%.2f", v * m}' "$out")
	[[ -n $rps && -n $p99 ]] || die "wrk output not understood: $out"
	errs=$(grep -E 'Non-2xx|Socket errors' "$out" | tr -s ' ' | paste -sd';' || true)
	add "http-rps/$sys" "$(printf '%.0f' "$rps")"
	add "http-p99/$sys" "$p99"
	if [[ -n $pid ]]; then
		# CPU time of the proxy process per request, in microseconds.
		add "http-cpu/$sys" "$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v r="$rps" -v d="$DURATION" 'BEGIN {printf "%.1f", t / hz * 1e6 / (r * d)}')"
	fi
	log "http round $r $sys: $rps req/s, p99 $p99 ms${errs:+, $errs}"
	[[ -z $errs ]] || add "http-err/$sys" "r$r:$errs"
}
if part http; then
log "HTTP: wrk -t1 -c32 -d${DURATION}s --latency -H 'Host: $HOST_HEADER', $ROUNDS rounds"
for sys in lifeboat haproxy direct; do run_wrk "$sys" "$WARMUP" "$T/wrk-$sys-warmup.txt"; done
for ((r = 1; r <= ROUNDS; r++)); do
	for sys in $(rotate $((r - 1)) lifeboat haproxy direct); do http_round "$sys" "$r"; done
done

fi

# ---------------------------------------------------------------- DNS
for name in www static; do
	for ((i = 0; i < 100; i++)); do echo "$name.bench.example A"; done >"$T/queries-$name.txt"
done
declare -A DNS_PORT=([lifeboat]="$LB_DNS_PORT" [pdns]="$PDNS_PORT" [pdns-static]="$PDNS_PORT")
declare -A DNS_PID=([lifeboat]="$LB_PID" [pdns]="$PDNS_PID" [pdns-static]="$PDNS_PID")
declare -A DNS_NAME=([lifeboat]=www [pdns]=www [pdns-static]=static)
run_dnsperf() { dnsperf -s 127.0.0.1 -p "${DNS_PORT[$1]}" -d "$T/queries-${DNS_NAME[$1]}.txt" -l "$2" -c 8 -T 1 -Q 200000 >"$3" 2>&1; }
dns_round() {
	local sys=$1 r=$2 out="$T/dnsperf-$1-$2.txt" pid=${DNS_PID[$1]} c0 c1 qps lost codes
	c0=$(cpu_ticks "$pid")
	run_dnsperf "$sys" "$DURATION" "$out"
	c1=$(cpu_ticks "$pid")
	qps=$(awk '/Queries per second:/ {print $4}' "$out")
	lost=$(awk '/Queries lost:/ {print $3 $4}' "$out")
	codes=$(awk -F: '/Response codes:/ {gsub(/^ +/, "", $2); print $2}' "$out")
	[[ -n $qps ]] || die "dnsperf output not understood: $out"
	add "dns-qps/$sys" "$(printf '%.0f' "$qps")"
	add "dns-cpu/$sys" "$(awk -v t=$((c1 - c0)) -v hz="$CLK_TCK" -v q="$qps" -v d="$DURATION" 'BEGIN {printf "%.1f", t / hz * 1e6 / (q * d)}')"
	log "dns round $r $sys: $qps q/s, lost $lost, $codes"
}
if part dns; then
log "DNS: dnsperf -l $DURATION -c 8 -T 1 -Q 200000 (www.bench.example A; static.bench.example A for the anchor), $ROUNDS rounds"
for sys in lifeboat pdns pdns-static; do run_dnsperf "$sys" "$WARMUP" "$T/dnsperf-$sys-warmup.txt"; done
for ((r = 1; r <= ROUNDS; r++)); do
	for sys in $(rotate $((r - 1)) lifeboat pdns pdns-static); do dns_round "$sys" "$r"; done
done
dns_ok "$LB_DNS_PORT" && dns_ok "$PDNS_PORT" || die "a DNS server changed its answer during the run"
fi

# ---------------------------------------------------------------- Postgres
declare -A PGB_PORT=([lifeboat]="$LB_PG_PORT" [lifeboat-user]="$LB_PGU_PORT" [direct]="$PG_PORT" [haproxy]="$HAPROXY_PG_PORT")
run_pgbench() { "$PGBIN/pgbench" -n -S -c 8 -j 2 -T "$2" -h 127.0.0.1 -p "${PGB_PORT[$1]}" -U postgres bench >"$3" 2>&1; }
pg_round() {
	local sys=$1 r=$2 out="$T/pgbench-$1-$2.txt" tps
	run_pgbench "$sys" "$DURATION" "$out" || die "pgbench failed: $(tail -3 "$out")"
	tps=$(awk '/^tps = / {print $3}' "$out" | tail -1)
	[[ -n $tps ]] || die "pgbench output not understood: $out"
	add "pg-tps/$sys" "$(printf '%.0f' "$tps")"
	log "postgres round $r $sys: $tps tps"
}
if part pg; then
log "Postgres: pgbench -n -S -c 8 -j 2 -T $DURATION (scale 10), $ROUNDS rounds"
for sys in lifeboat lifeboat-user direct haproxy; do run_pgbench "$sys" "$WARMUP" "$T/pgbench-$sys-warmup.txt"; done
for ((r = 1; r <= ROUNDS; r++)); do
	for sys in $(rotate $((r - 1)) lifeboat lifeboat-user direct haproxy); do pg_round "$sys" "$r"; done
done
fi

# ---------------------------------------------------------------- summary
med() { median ${RES[$1]:-}; }
runs() { echo "${RES[$1]:-}" | sed 's/^ //; s/ / \/ /g'; }
verdict() { awk -v v="$1" -v t="$2" -v op="$3" 'BEGIN {if (v == "n/a" || v == "") {print "not run"; exit}; ok = (op == ">=") ? v >= t : v <= t; print ok ? "met" : "MISSED"}'; }

H_LB=$(med http-rps/lifeboat) H_HA=$(med http-rps/haproxy) H_D=$(med http-rps/direct)
P_LB=$(med http-p99/lifeboat) P_HA=$(med http-p99/haproxy) P_D=$(med http-p99/direct)
H_RATIO=$(ratio "$H_LB" "$H_HA")
# The p99 added over direct (n/a when the HTTP part did not run).
added() { awk -v a="$1" -v b="$2" 'BEGIN {if (a == "" || b == "") print "n/a"; else printf "%+.2f", a - b}'; }
P_ADD=$(added "$P_LB" "$P_D")
P_ADD_HA=$(added "$P_HA" "$P_D")
D_LB=$(med dns-qps/lifeboat) D_PD=$(med dns-qps/pdns)
D_RATIO=$(ratio "$D_LB" "$D_PD")
D_PS=$(med dns-qps/pdns-static)
G_LB=$(med pg-tps/lifeboat) G_D=$(med pg-tps/direct)
G_RATIO=$(ratio "$G_LB" "$G_D")
G_HA=$(med pg-tps/haproxy)
G_LU=$(med pg-tps/lifeboat-user)

cat <<EOF

## Summary: $ROUNDS rounds of ${DURATION}s each, medians (per-round figures in round order; the order of the systems rotates every round)

machine: $(nproc) CPU, $(awk -F': ' '/model name/ {print $2; exit}' /proc/cpuinfo), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), $( . /etc/os-release && echo "$PRETTY_NAME"), $(go version | awk '{print $3}')
lifeboat: $(git -C "$ROOT" describe --tags --always --dirty 2>/dev/null || echo unknown); $(haproxy -v | awk 'NR == 1 {print "HAProxy " $3}'); PowerDNS $(pdns_server --version 2>&1 | grep -o 'Authoritative Server [0-9.]*' | awk '{print $3; exit}'); $("$PGBIN/postgres" --version)

| test | system | median | runs | ratio | target |
|---|---|---|---|---|---|
| HTTP req/s | lifeboat | $H_LB | $(runs http-rps/lifeboat) | lifeboat/haproxy $H_RATIO | ≥ 0.8: $(verdict "$H_RATIO" 0.8 ">=") |
| HTTP req/s | haproxy | $H_HA | $(runs http-rps/haproxy) | | |
| HTTP req/s | direct | $H_D | $(runs http-rps/direct) | | |
| HTTP p99 ms | lifeboat | $P_LB | $(runs http-p99/lifeboat) | $P_ADD ms over direct | ≤ 1 ms: $(verdict "$P_ADD" 1 "<=") |
| HTTP p99 ms | haproxy | $P_HA | $(runs http-p99/haproxy) | $P_ADD_HA ms over direct | |
| HTTP p99 ms | direct | $P_D | $(runs http-p99/direct) | | |
| HTTP proxy CPU µs/req | lifeboat | $(med http-cpu/lifeboat) | $(runs http-cpu/lifeboat) | | |
| HTTP proxy CPU µs/req | haproxy | $(med http-cpu/haproxy) | $(runs http-cpu/haproxy) | | |
| DNS queries/s | lifeboat | $D_LB | $(runs dns-qps/lifeboat) | lifeboat/pdns $D_RATIO | ≥ 1.0: $(verdict "$D_RATIO" 1.0 ">=") |
| DNS queries/s | pdns (LUA ifurlup) | $D_PD | $(runs dns-qps/pdns) | | |
| DNS queries/s | anchor: pdns, static A | $D_PS | $(runs dns-qps/pdns-static) | lifeboat/pdns-static $(ratio "$D_LB" "$D_PS") | |
| DNS server CPU µs/query | lifeboat | $(med dns-cpu/lifeboat) | $(runs dns-cpu/lifeboat) | | |
| DNS server CPU µs/query | pdns (LUA ifurlup) | $(med dns-cpu/pdns) | $(runs dns-cpu/pdns) | | |
| DNS server CPU µs/query | anchor: pdns, static A | $(med dns-cpu/pdns-static) | $(runs dns-cpu/pdns-static) | | |
| Postgres TPS | through lifeboat (relay: auto: the kernel's NAT) | $G_LB | $(runs pg-tps/lifeboat) | through/direct $G_RATIO | ≥ 0.9: $(verdict "$G_RATIO" 0.9 ">=") |
| Postgres TPS | through lifeboat, relay: user | $G_LU | $(runs pg-tps/lifeboat-user) | through/direct $(ratio "$G_LU" "$G_D") | |
| Postgres TPS | direct | $G_D | $(runs pg-tps/direct) | | |
| Postgres TPS | anchor: through haproxy (tcp) | $G_HA | $(runs pg-tps/haproxy) | through/direct $(ratio "$G_HA" "$G_D") | |
EOF
for k in "${!RES[@]}"; do
	[[ $k == http-err/* ]] && echo "wrk reported errors for ${k#http-err/}:${RES[$k]}"
done
exit 0
