#!/usr/bin/env bash
# Soak benchmark (issue 18): does a long-running monolith stay small and fast?
#
#   scripts/soak.sh [-m MESSAGES] [-c CONFIG_OVERRIDES.yaml] [-o OUT_DIR]
#
# Builds the monolith and mxbench (../shared/tools/mxbench, override with MXBENCH_DIR), starts the monolith on a
# fresh data directory with the default config (open registration, rate limiting off, logging at warn), then
# runs mxbench `send` (20 users x 100 messages into a new room) again and again until MESSAGES (default 200000)
# messages have been sent: 100 rooms and 2,000 registered users for the default, every user's live /sync loop
# running during its own run. After every 20,000 messages it prints one line: messages sent, the run's msg/s
# and PUT p99, the server's RSS and Go heap (in use, from /metrics), the bytes of every cache, and the data
# directory's size per database (with its WAL; those over 0.1 MiB) and in total. Every mxbench run also checks
# that nothing was lost, duplicated or reordered; the script goes on after a run that found a problem, counts
# them, and exits 1 at the end if there was any (or at once when mxbench could not run). Results (mxbench JSON lines, the samples as TSV and
# the server log) go to OUT_DIR (default /tmp/dendrite-soak), and at the end a heap profile (heap.pprof, for
# `go tool pprof`).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
messages=200000
overrides=
out=/tmp/dendrite-soak
while getopts "m:c:o:" opt; do
	case "$opt" in
	m) messages=$OPTARG ;;
	c) overrides=$OPTARG ;;
	o) out=$OPTARG ;;
	*)
		echo "usage: $0 [-m MESSAGES] [-c CONFIG_OVERRIDES.yaml] [-o OUT_DIR]" >&2
		exit 2
		;;
	esac
done
mxbench_dir=${MXBENCH_DIR:-$root/../shared/tools/mxbench}
rm -rf "$out"
mkdir -p "$out/data"
chmod 700 "$out" "$out/data"
(cd "$root" && go build -o "$out/dendrite" ./cmd/dendrite)
(cd "$mxbench_dir" && go build -o "$out/mxbench" .)

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
metrics=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$out/config.yaml" <<EOF
version: 1
global:
  server_name: soak.test
  data_dir: $out/data
  logging: {level: warn}
  metrics: {enabled: true, listen: "127.0.0.1:$metrics"}
client_api:
  registration_disabled: false
  rate_limiting: {enabled: false}
EOF
if [ -n "$overrides" ]; then
	python3 - "$out/config.yaml" "$overrides" <<'EOF'
import sys, yaml
def merge(a, b):
    for k, v in b.items():
        a[k] = merge(a.get(k, {}), v) if isinstance(v, dict) and isinstance(a.get(k), dict) else v
    return a
base = yaml.safe_load(open(sys.argv[1]))
merge(base, yaml.safe_load(open(sys.argv[2])))
yaml.safe_dump(base, open(sys.argv[1], "w"))
EOF
fi
"$out/dendrite" --config "$out/config.yaml" --http-bind-address "127.0.0.1:$port" >"$out/server.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do
	curl -fsS "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null 2>&1 && break
	sleep 0.2
done

# sample prints one TSV line: messages, msg/s and p99 of the last run, RSS, Go heap in use, cache bytes, and
# the size of each file of the data directory in MiB.
sample() {
	local sent=$1 rate=$2 p99=$3
	local rss heap cache files
	rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
	local m
	m=$(curl -fsS "http://127.0.0.1:$metrics/metrics")
	heap=$(echo "$m" | awk '$1 == "go_memstats_heap_inuse_bytes" {printf "%.1f", $2/1048576}')
	cache=$(echo "$m" | awk '/^dendrite_cache_bytes/ {s += $2} END {printf "%.1f", s/1048576}')
	files=$(cd "$out/data" && du -k -- *.db* 2>/dev/null | awk '{n = $2; sub(/\.db.*/, "", n); s[n] += $1; t += $1}
		END {for (n in s) if (s[n] >= 102.4) printf "%s=%.1f ", n, s[n]/1024; printf "total=%.1f", t/1024}')
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sent" "$rate" "$p99" "$rss" "$heap" "$cache" "$files" | tee -a "$out/samples.tsv"
}
printf 'messages\tmsg/s\tp99_ms\trss_mib\theap_mib\tcache_mib\tdata_mib\n' | tee "$out/samples.tsv"
sample 0 - -
sent=0
problems=0
next=20000
while [ "$sent" -lt "$messages" ]; do
	status=0
	"$out/mxbench" -hs "http://127.0.0.1:$port" -scenario send -users 20 -messages 100 -settle 0 \
		>>"$out/mxbench.jsonl" 2>>"$out/mxbench.txt" || status=$?
	case $status in
	0) ;;
	2) problems=$((problems + 1)) ;;
	*)
		echo "soak.sh: mxbench could not run after $sent messages; see $out/mxbench.txt" >&2
		exit 1
		;;
	esac
	sent=$((sent + 2000))
	if [ "$sent" -ge "$next" ] || [ "$sent" -ge "$messages" ]; then
		read -r rate p99 < <(tail -1 "$out/mxbench.jsonl" | python3 -c '
import json, sys
m = json.load(sys.stdin)["metrics"]
print(round(m["messages_per_s"]), round(m["send_latency"]["p99_ms"], 1))')
		sample "$sent" "$rate" "$p99"
		next=$((next + 20000))
	fi
done
curl -fsS "http://127.0.0.1:$metrics/debug/pprof/heap" -o "$out/heap.pprof"
echo "soak.sh: $problems of $((sent / 2000)) mxbench runs found problems (see $out/mxbench.txt: a live /sync that fell" \
	"behind more than its timeline limit, on a machine busy with other work, reports the gap as lost)"
[ "$problems" -eq 0 ]
