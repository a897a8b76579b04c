#!/usr/bin/env bash
# Side-by-side benchmark of Lifeboat's file replication (the sync engine of
# package files, file:// → file://) against rsync and rclone, on one
# machine, every tree in one temporary directory (one filesystem):
#
#   initial    10,000 files of mixed sizes (90% of 512 B–32 KiB, 9% of
#              64–512 KiB, 1% of 2–10 MiB: ~1 GB) into an empty
#              destination, a new one every run
#   no change  100,000 files of 1 KiB, all up to date at the destination
#
# Commands: Lifeboat is bench/files (a small main over files.OpenSyncer and
# Sync, default options but Concurrency), `rsync -a SRC/ DST/`, and
# `rclone sync SRC DST --transfers N` (rclone's defaults otherwise, N =
# Lifeboat's concurrency). Each run is a whole process under
# /usr/bin/time -v: wall time, user + system CPU, peak RSS. Content is
# generated once, deterministically (bench/files gen).
#
# The page cache cannot be dropped here (no privilege), so every run is
# warm: each tool first does one untimed run (for "no change": an initial
# copy, then an untimed re-sync), then ROUNDS timed runs with the order of
# the tools rotated every round; figures are medians. `sync` runs between
# runs (untimed) so that one run's writeback does not land in the next.
#
# Destinations are kept until the end: ext4 without a journal (as here)
# skips inodes freed in the last 60 s (5 min while unsynced) when it
# allocates new ones, which made every file creation after a mass deletion
# several times dearer. When the disk is too small to keep them, each is
# removed after its run and the next run waits SETTLE seconds; under ~5 GB
# free, the file counts are divided by 4 (the report says so).
#
# Usage: bench/files.sh             (from anywhere; ~5 min; installs nothing)
# Environment: ROUNDS (3, initial), NC_ROUNDS (5, no change), CONCURRENCY
#   (8: Lifeboat's default), FILES (10000), SMALL_FILES (100000), SETTLE
#   (65), TMPDIR (/tmp), KEEP=1 keeps the temporary directory.
# Needs: go, rsync, rclone, /usr/bin/time (GNU time).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ROUNDS=${ROUNDS:-3}
NC_ROUNDS=${NC_ROUNDS:-5}
CONCURRENCY=${CONCURRENCY:-8}
FILES=${FILES:-10000}
SMALL_FILES=${SMALL_FILES:-100000}
SETTLE=${SETTLE:-65}
TOOLS=(lifeboat rsync rclone)

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "FAIL: $*"; exit 1; }

missing=()
command -v rsync >/dev/null || missing+=(rsync)
command -v rclone >/dev/null || missing+=(rclone)
[[ -x /usr/bin/time ]] || missing+=(time)
if ((${#missing[@]})); then
	die "not installed: ${missing[*]}; install with: apt-get install -y ${missing[*]} (or scripts/deps.sh)"
fi
command -v go >/dev/null || die "go is not installed"

base=${TMPDIR:-/tmp}
avail_kib=$(df -Pk "$base" | awk 'NR == 2 { print $4 }')
NOTE=
if ((avail_kib < 5 * 1024 * 1024)); then
	FILES=$((FILES / 4))
	SMALL_FILES=$((SMALL_FILES / 4))
	NOTE="scaled down: $((avail_kib / 1024)) MiB free under $base (< 5 GiB), so $FILES and $SMALL_FILES files instead of 10,000 and 100,000"
	log "$NOTE"
fi
# Room to keep every destination: the mixed tree (~106 KB a file) once per
# run plus the source, and the small trees (~4 KiB blocks a file, plus
# directories) four times; 1 GiB to spare.
need_kib=$((FILES * 106 * (1 + ${#TOOLS[@]} * (ROUNDS + 1)) + SMALL_FILES * 5 * 4 + 1024 * 1024))
KEEP_DESTS=1
if ((avail_kib < need_kib)); then
	KEEP_DESTS=0
	log "$((avail_kib / 1024)) MiB free, $((need_kib / 1024)) MiB needed to keep every destination: removing each after its run, then waiting ${SETTLE}s"
fi

T=$(mktemp -d "$base/lifeboat-bench-files.XXXXXX")
cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
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

log "building bench/files"
(cd "$ROOT" && go build -o "$T/lifeboat-files" ./bench/files)
: >"$T/rclone.conf" # no remotes: local paths only

# tree_stats DIR: "files bytes" of the regular files below DIR, Lifeboat's
# own (.lifeboat/) excluded.
tree_stats() {
	find "$1" -path "$1/.lifeboat" -prune -o -type f -printf '%s\n' | awk '{ n++; s += $1 } END { printf "%d %d\n", n, s }'
}

# run TOOL SRC DST EXPECT: one run of TOOL under /usr/bin/time -v; sets
# WALL (s), CPU (user + system, s), RSS (peak, KiB). EXPECT is the number
# of objects Lifeboat must copy (it fails otherwise).
run() {
	local tool=$1 src=$2 dst=$3 expect=$4 cmd t0 t1
	case $tool in
	lifeboat) cmd=("$T/lifeboat-files" sync -src "$src" -dst "$dst" -concurrency "$CONCURRENCY" -expect-copied "$expect") ;;
	rsync) cmd=(rsync -a "$src/" "$dst/") ;;
	rclone) cmd=(rclone sync "$src" "$dst" --transfers "$CONCURRENCY" --config "$T/rclone.conf") ;;
	esac
	t0=$(date +%s%N)
	if ! /usr/bin/time -v -o "$T/time.out" "${cmd[@]}" >"$T/run.out" 2>&1; then
		cat "$T/run.out" "$T/time.out" >&2
		die "$tool: ${cmd[*]}"
	fi
	t1=$(date +%s%N)
	WALL=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f", (b - a) / 1e9 }')
	CPU=$(awk -F': ' '/User time \(seconds\)/ { u = $2 } /System time \(seconds\)/ { s = $2 } END { printf "%.2f", u + s }' "$T/time.out")
	RSS=$(awk -F': ' '/Maximum resident set size/ { print $2 }' "$T/time.out")
}

median() {
	printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%.3f\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
verdict() { awk -v r="$1" -v t="$2" 'BEGIN { print (r <= t ? "met" : "missed") }'; }
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

# rotated R: the tools in the order of round R.
rotated() {
	local r=$1 i n=${#TOOLS[@]}
	for ((i = 0; i < n; i++)); do
		printf '%s ' "${TOOLS[(i + r) % n]}"
	done
}

declare -A WALLS CPUS RSSS
record() { # PHASE TOOL
	WALLS[$1,$2]+="$WALL "
	CPUS[$1,$2]+="$CPU "
	RSSS[$1,$2]+="$RSS "
}

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "machine: $(nproc) CPUs, $(awk -F': ' '/model name/ { print $2; exit }' /proc/cpuinfo), $(free -g | awk '/Mem:/ { print $2 }') GiB, load $LOAD_START"
log "$(go version); $(rsync --version | head -1); $(rclone version | head -1); $(df -PT "$T" | awk 'NR == 2 { print $2 }') at $T"

# ---- initial sync: FILES files of mixed sizes -------------------------------
log "generating $FILES files of mixed sizes"
"$T/lifeboat-files" gen -dir "$T/src" -layout mixed -n "$FILES" >/dev/null
read -r src_n src_b < <(tree_stats "$T/src")
log "source: $src_n files, $src_b bytes"
sync

# initial_run TOOL NAME: one run of TOOL into the new directory $T/NAME,
# checked: the same number of files and bytes as the source.
initial_run() {
	local tool=$1 dst=$T/$2
	mkdir "$dst"
	run "$tool" "$T/src" "$dst" "$src_n"
	sync
	local got
	got=$(tree_stats "$dst")
	[[ $got == "$src_n $src_b" ]] || die "$tool: destination has $got (files bytes), source $src_n $src_b"
}

after_run() { # DIR: removed now, and the next run waits, unless kept
	if ((KEEP_DESTS == 0)); then
		rm -rf "$1"
		sync
		sleep "$SETTLE"
	fi
}

for tool in "${TOOLS[@]}"; do
	log "initial: warm-up $tool"
	initial_run "$tool" "warm-$tool"
	diff -r --exclude=.lifeboat "$T/src" "$T/warm-$tool" >/dev/null || die "$tool: the copy differs from the source"
	log "  $WALL s (untimed), content checked"
	after_run "$T/warm-$tool"
done
for ((r = 1; r <= ROUNDS; r++)); do
	for tool in $(rotated "$r"); do
		initial_run "$tool" "dst-$tool-$r"
		record initial "$tool"
		log "initial: round $r $tool: $WALL s, CPU $CPU s, peak RSS $(mib "$RSS") MiB"
		after_run "$T/dst-$tool-$r"
	done
done

# ---- no-change re-sync: SMALL_FILES files of 1 KiB --------------------------
log "generating $SMALL_FILES files of 1 KiB"
"$T/lifeboat-files" gen -dir "$T/small" -layout small -n "$SMALL_FILES" >/dev/null
read -r small_n small_b < <(tree_stats "$T/small")
sync
declare -A FIRST
for tool in "${TOOLS[@]}"; do
	mkdir "$T/small-$tool"
	run "$tool" "$T/small" "$T/small-$tool" "$small_n"
	FIRST[$tool]=$WALL
	sync
	got=$(tree_stats "$T/small-$tool")
	[[ $got == "$small_n $small_b" ]] || die "$tool: destination has $got (files bytes), source $small_n $small_b"
	log "no change: $tool first copy of $small_n files: $WALL s (one run, for information)"
	# The warm-up re-sync; Lifeboat's records the destination's
	# modification times in its manifest, as every later pass has them.
	run "$tool" "$T/small" "$T/small-$tool" 0
	log "no change: $tool warm-up re-sync: $WALL s (untimed)"
done
for ((r = 1; r <= NC_ROUNDS; r++)); do
	for tool in $(rotated "$r"); do
		run "$tool" "$T/small" "$T/small-$tool" 0
		record nochange "$tool"
		log "no change: round $r $tool: $WALL s, CPU $CPU s, peak RSS $(mib "$RSS") MiB"
	done
done
for tool in "${TOOLS[@]}"; do
	got=$(tree_stats "$T/small-$tool")
	[[ $got == "$small_n $small_b" ]] || die "$tool: destination has $got after the re-syncs"
done

# ---- report -----------------------------------------------------------------
declare -A MW MC MR
for phase in initial nochange; do
	for tool in "${TOOLS[@]}"; do
		# shellcheck disable=SC2086
		MW[$phase,$tool]=$(median ${WALLS[$phase,$tool]})
		# shellcheck disable=SC2086
		MC[$phase,$tool]=$(median ${CPUS[$phase,$tool]})
		# shellcheck disable=SC2086
		MR[$phase,$tool]=$(median ${RSSS[$phase,$tool]})
	done
done
runs() { echo "$1" | xargs | sed 's# # / #g'; }
i_rs=$(ratio "${MW[initial,lifeboat]}" "${MW[initial,rsync]}")
i_rc=$(ratio "${MW[initial,lifeboat]}" "${MW[initial,rclone]}")
n_rs=$(ratio "${MW[nochange,lifeboat]}" "${MW[nochange,rsync]}")
n_rc=$(ratio "${MW[nochange,lifeboat]}" "${MW[nochange,rclone]}")

cat <<EOF

initial sync: $src_n files, $src_b bytes; no-change re-sync: $small_n files of 1 KiB
concurrency $CONCURRENCY (Lifeboat Options.Concurrency, rclone --transfers); ${ROUNDS} / ${NC_ROUNDS} timed rounds, warm cache
load average (1, 5, 15 min) at the start: $LOAD_START; at the end: $(cut -d' ' -f1-3 /proc/loadavg)
${NOTE:+note: $NOTE
}$(go version), $(rsync --version | head -1), $(rclone version | head -1), $(date -u +%F)

| measure | Lifeboat | rsync | rclone | ratio Lifeboat/rsync | ratio Lifeboat/rclone | target |
|---|---|---|---|---|---|---|
| initial sync, wall (runs) | **${MW[initial,lifeboat]} s** ($(runs "${WALLS[initial,lifeboat]}")) | ${MW[initial,rsync]} s ($(runs "${WALLS[initial,rsync]}")) | ${MW[initial,rclone]} s ($(runs "${WALLS[initial,rclone]}")) | **$i_rs** | **$i_rc** | ≤ 1.2× rsync: **$(verdict "$i_rs" 1.2)**; ≤ 1.0× rclone: **$(verdict "$i_rc" 1.0)** |
| initial sync, CPU user + system | ${MC[initial,lifeboat]} s | ${MC[initial,rsync]} s | ${MC[initial,rclone]} s | | | |
| initial sync, peak RSS | $(mib "${MR[initial,lifeboat]}") MiB | $(mib "${MR[initial,rsync]}") MiB | $(mib "${MR[initial,rclone]}") MiB | | | |
| no-change re-sync, wall (runs) | **${MW[nochange,lifeboat]} s** ($(runs "${WALLS[nochange,lifeboat]}")) | ${MW[nochange,rsync]} s ($(runs "${WALLS[nochange,rsync]}")) | ${MW[nochange,rclone]} s ($(runs "${WALLS[nochange,rclone]}")) | **$n_rs** | $n_rc | ≤ 1.0× rsync: **$(verdict "$n_rs" 1.0)** |
| no-change re-sync, CPU user + system | ${MC[nochange,lifeboat]} s | ${MC[nochange,rsync]} s | ${MC[nochange,rclone]} s | | | |
| no-change re-sync, peak RSS | $(mib "${MR[nochange,lifeboat]}") MiB | $(mib "${MR[nochange,rsync]}") MiB | $(mib "${MR[nochange,rclone]}") MiB | | | |
| first copy of the $small_n small files (one run) | ${FIRST[lifeboat]} s | ${FIRST[rsync]} s | ${FIRST[rclone]} s | $(ratio "${FIRST[lifeboat]}" "${FIRST[rsync]}") | $(ratio "${FIRST[lifeboat]}" "${FIRST[rclone]}") | |
EOF
