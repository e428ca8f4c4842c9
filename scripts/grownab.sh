#!/usr/bin/env bash
# A/B of two monolith builds on a grown server (issue 18): is a change faster where a soak ends?
#
#   scripts/grownab.sh -a DENDRITE_A -b DENDRITE_B [-d DATA_DIR] [-r ROUNDS] [-n RUNS] [-o OUT_DIR]
#
# A soak compares its first 20,000 messages with its last, one step each, and two steps of the same build
# differ by 10-20%: too much to tell a change of a few percent. This script measures two prebuilt monolith
# binaries in the same state, alternately. For each of ROUNDS rounds (default 4) it runs build A and build B,
# in the order AB, then BA, and so on; each time it copies DATA_DIR (a data directory that scripts/soak.sh
# left, e.g. /tmp/dendrite-soak/data after 200,000 messages: its server name is soak.test) to a fresh one, or
# starts on an empty directory with -d -, starts the binary with soak.sh's config (open registration, rate
# limiting off, logging at warn), waits until it is idle (under a tenth of a core for half a second), then 20 s
# (the embedded log's first trim, which deletes the copied log's backlog) and until idle again, and
# runs mxbench `send` (20 users x 100 messages into a new room) RUNS times (default 5), each from an idle
# server. It prints a line per server: the messages sent over the runs' sending time (msg/s), the server's CPU
# per message over the runs (user + system, the waits for idle included, so that work a run leaves behind
# counts), and each run's msg/s; then each build's mean and range, and B's means over A's. Results (mxbench
# JSON lines, server logs) go to OUT_DIR (default /tmp/dendrite-grownab). mxbench is built from
# ../shared/tools/mxbench (override with MXBENCH_DIR). Build the binaries with `go build -o FILE
# ./cmd/dendrite` at each revision.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_a=
bin_b=
data=-
rounds=4
runs=5
out=/tmp/dendrite-grownab
usage() {
	echo "usage: $0 -a DENDRITE_A -b DENDRITE_B [-d DATA_DIR] [-r ROUNDS] [-n RUNS] [-o OUT_DIR]" >&2
	exit 2
}
while getopts "a:b:d:r:n:o:" opt; do
	case "$opt" in
	a) bin_a=$OPTARG ;;
	b) bin_b=$OPTARG ;;
	d) data=$OPTARG ;;
	r) rounds=$OPTARG ;;
	n) runs=$OPTARG ;;
	o) out=$OPTARG ;;
	*) usage ;;
	esac
done
[ "$OPTIND" -gt $# ] || usage
if [ ! -x "$bin_a" ] || [ ! -x "$bin_b" ]; then usage; fi
[ "$data" = - ] || [ -d "$data" ] || {
	echo "$0: $data is not a directory" >&2
	exit 2
}
for n in "$rounds" "$runs"; do
	case $n in '' | *[!0-9]* | 0*) usage ;; esac
done
mxbench_dir=${MXBENCH_DIR:-$root/../shared/tools/mxbench}
rm -rf "$out"
mkdir -p "$out"
chmod 700 "$out"
(cd "$mxbench_dir" && go build -o "$out/mxbench" .)
# shellcheck source=scripts/idle.sh
. "$root/scripts/idle.sh"
# settle waits until the server $1 is idle (wait_idle), or says it did not go idle and runs on.
settle() {
	wait_idle "$1" || echo "grownab.sh: the server did not go idle within two minutes; running on" >&2
}

pid=
# trim_wait is how long after its start the embedded log has trimmed once (every quarter of
# global.log.consumed_retention, a minute by default).
trim_wait=20
# measure NAME BINARY DIR runs BINARY on a copy of the data directory in DIR and appends its line to
# $out/results.tsv: name, msg/s, CPU ms per message, each run's msg/s.
measure() {
	local name=$1 bin=$2 dir=$3 port c0 c1
	rm -rf "$dir"
	mkdir -p "$dir"
	chmod 700 "$dir"
	if [ "$data" = - ]; then
		mkdir -m 700 "$dir/data"
	else
		cp -a "$data" "$dir/data"
	fi
	port=$(freeport)
	cat >"$dir/config.yaml" <<EOF
version: 1
global:
  server_name: soak.test
  data_dir: $dir/data
  logging: {level: warn}
client_api:
  registration_disabled: false
  rate_limiting: {enabled: false}
EOF
	"$bin" --config "$dir/config.yaml" --http-bind-address "127.0.0.1:$port" >"$dir/server.log" 2>&1 &
	pid=$!
	trap 'kill $pid 2>/dev/null || true' EXIT
	for _ in $(seq 300); do
		curl -fsS "http://127.0.0.1:$port/_matrix/client/versions" >/dev/null 2>&1 && break
		sleep 0.2
	done
	settle "$pid"
	# A copied data directory's embedded log holds the records of the soak's last minute, all past
	# the retention by now: the log's first trim (within trim_wait of the start) deletes them, which
	# is not the builds' cost per message.
	sleep "$trim_wait"
	settle "$pid"
	c0=$(tree_ticks "$pid")
	for _ in $(seq "$runs"); do
		settle "$pid"
		"$out/mxbench" -hs "http://127.0.0.1:$port" -scenario send -users 20 -messages 100 -settle 0 \
			>>"$dir/mxbench.jsonl" 2>>"$dir/mxbench.txt" || [ $? -eq 2 ] # 2: a problem found, reported
	done
	settle "$pid"
	c1=$(tree_ticks "$pid")
	kill "$pid"
	wait "$pid" 2>/dev/null || true
	trap - EXIT
	rm -rf "$dir/data"
	python3 - "$dir/mxbench.jsonl" "$name" "$((c1 - c0))" "$(getconf CLK_TCK)" >>"$out/results.tsv" <<'EOF'
import json, sys
rows = [json.loads(l)["metrics"] for l in open(sys.argv[1])]
sent = sum(m["sent"] for m in rows)
secs = sum(m["elapsed_s"] for m in rows)
cpu_ms = int(sys.argv[3]) * 1000 / int(sys.argv[4]) / sent
print("%s\t%.0f\t%.2f\t%s" % (sys.argv[2], sent / secs, cpu_ms, " ".join("%.0f" % m["messages_per_s"] for m in rows)))
EOF
	tail -1 "$out/results.tsv"
}

printf 'build\tmsg/s\tcpu_ms\truns_msg/s\n'
for r in $(seq "$rounds"); do
	if [ $((r % 2)) -eq 1 ]; then order="a b"; else order="b a"; fi
	for x in $order; do
		if [ "$x" = a ]; then measure A "$bin_a" "$out/r$r-a"; else measure B "$bin_b" "$out/r$r-b"; fi
	done
done
python3 - "$out/results.tsv" <<'EOF'
import sys
res = {}
for line in open(sys.argv[1]):
    name, rate, cpu, _ = line.rstrip("\n").split("\t")
    res.setdefault(name, []).append((float(rate), float(cpu)))
mean = {}
print("\nsummary")
for name in ("A", "B"):
    v = res.get(name, [])
    rates, cpus = [x[0] for x in v], [x[1] for x in v]
    mean[name] = (sum(rates) / len(v), sum(cpus) / len(v))
    print("  %s: %d servers, msg/s mean %.0f (%.0f-%.0f), CPU per message mean %.2f ms (%.2f-%.2f)" %
          (name, len(v), mean[name][0], min(rates), max(rates), mean[name][1], min(cpus), max(cpus)))
print("  B / A: msg/s %.3f, CPU per message %.3f" % (mean["B"][0] / mean["A"][0], mean["B"][1] / mean["A"][1]))
EOF
