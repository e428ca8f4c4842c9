#!/usr/bin/env bash
# A/B of two monolith builds on a grown server (issue 18): is a change faster where a soak ends?
#
#   scripts/grownab.sh -a DENDRITE_A -b DENDRITE_B [-d DATA_DIR] [-D DATA_DIR_B] [-r ROUNDS] [-n RUNS]
#                      [-p SECONDS] [-o OUT_DIR]
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
# server. -D gives B a data directory of its own (- for an empty one): with the same binary as A and B,
# `-d - -D GROWN` measures what a grown server costs. -p takes a CPU profile of every server over the first
# SECONDS of its runs (OUT_DIR/rROUND-a|b/cpu.pprof; make it longer than the runs take, so that it holds all
# of their CPU and some idle time, and compare two with `go tool pprof -diff_base`). -s runs A and B at the
# same time instead, each on its own data directory and loaded by its own mxbench, run by run: the machine's
# speed changes from one second to the next (a fixed CPU-bound loop here took 0.49-0.89 s within a minute),
# and servers measured at the same time see the same machine.
# It prints a line per server: the messages sent over the runs' sending time (msg/s), the server's CPU
# per message over the runs (user + system, the waits for idle included, so that work a run leaves behind
# counts), and each run's msg/s; then each build's mean and range, B's means over A's, and B over A within
# each round (median and range): the machine's speed drifts over minutes (the same binary took 3.2 ms of
# CPU per message in one round and 4.5 ms half an hour later), and a round's two servers run minutes apart
# at most. Results (mxbench JSON lines, server logs) go to OUT_DIR (default /tmp/dendrite-grownab). mxbench
# is built from ../shared/tools/mxbench (override with MXBENCH_DIR). Build the binaries with `go build -o
# FILE ./cmd/dendrite` at each revision.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin_a=
bin_b=
data=-
data_b=
profile=
together=
rounds=4
runs=5
out=/tmp/dendrite-grownab
usage() {
	echo "usage: $0 -a DENDRITE_A -b DENDRITE_B [-d DATA_DIR] [-D DATA_DIR_B] [-r ROUNDS] [-n RUNS] [-p SECONDS] [-s] [-o OUT_DIR]" >&2
	exit 2
}
while getopts "a:b:d:D:r:n:p:so:" opt; do
	case "$opt" in
	a) bin_a=$OPTARG ;;
	b) bin_b=$OPTARG ;;
	d) data=$OPTARG ;;
	D) data_b=$OPTARG ;;
	r) rounds=$OPTARG ;;
	n) runs=$OPTARG ;;
	p) profile=$OPTARG ;;
	s) together=1 ;;
	o) out=$OPTARG ;;
	*) usage ;;
	esac
done
[ "$OPTIND" -gt $# ] || usage
if [ ! -x "$bin_a" ] || [ ! -x "$bin_b" ]; then usage; fi
data_b=${data_b:-$data}
for d in "$data" "$data_b"; do
	[ "$d" = - ] || [ -d "$d" ] || {
		echo "$0: $d is not a directory" >&2
		exit 2
	}
done
for n in "$rounds" "$runs" ${profile:+"$profile"}; do
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

# trim_wait is how long after its start the embedded log has trimmed once (every quarter of
# global.log.consumed_retention, a minute by default).
trim_wait=20
declare -A pid port internal
# start X BINARY SOURCE starts BINARY in $out/r$r-X on a copy of the data directory SOURCE (- for an
# empty one) and waits until it answers.
start() {
	local x=$1 bin=$2 source=$3 dir="$out/r$r-$1"
	rm -rf "$dir"
	mkdir -p "$dir"
	chmod 700 "$dir"
	if [ "$source" = - ]; then
		mkdir -m 700 "$dir/data"
	else
		cp -a "$source" "$dir/data"
	fi
	port[$x]=$(freeport)
	internal[$x]=$(freeport)
	cat >"$dir/config.yaml" <<EOF
version: 1
global:
  server_name: soak.test
  data_dir: $dir/data
  logging: {level: warn}
  metrics: {enabled: true, listen: "127.0.0.1:${internal[$x]}"}
client_api:
  registration_disabled: false
  rate_limiting: {enabled: false}
EOF
	"$bin" --config "$dir/config.yaml" --http-bind-address "127.0.0.1:${port[$x]}" >"$dir/server.log" 2>&1 &
	pid[$x]=$!
	for _ in $(seq 300); do
		curl -fsS "http://127.0.0.1:${port[$x]}/_matrix/client/versions" >/dev/null 2>&1 && break
		sleep 0.2
	done
}
trap 'kill "${pid[@]}" 2>/dev/null || true' EXIT
# settle_all waits until every server of $@ (a, b) is idle.
settle_all() {
	local x
	for x in "$@"; do settle "${pid[$x]}"; done
}
# measure X... measures the started servers X... (a and/or b), each loaded by its own mxbench at the
# same time, and appends each one's line to $out/results.tsv: name, msg/s, CPU ms per message, each
# run's msg/s; then stops them.
measure() {
	local x c1 dir loads l
	local -A c0 prof
	settle_all "$@"
	# A copied data directory's embedded log holds the records of the soak's last minute, all past
	# the retention by now: the log's first trim (within trim_wait of the start) deletes them, which
	# is not the builds' cost per message.
	sleep "$trim_wait"
	settle_all "$@"
	for x in "$@"; do
		c0[$x]=$(tree_ticks "${pid[$x]}")
		if [ -n "$profile" ]; then
			curl -fsS "http://127.0.0.1:${internal[$x]}/debug/pprof/profile?seconds=$profile" -o "$out/r$r-$x/cpu.pprof" &
			prof[$x]=$!
		fi
	done
	for _ in $(seq "$runs"); do
		settle_all "$@"
		loads=()
		for x in "$@"; do
			dir="$out/r$r-$x"
			"$out/mxbench" -hs "http://127.0.0.1:${port[$x]}" -scenario send -users 20 -messages 100 -settle 0 \
				>>"$dir/mxbench.jsonl" 2>>"$dir/mxbench.txt" &
			loads+=($!)
		done
		for l in "${loads[@]}"; do
			wait "$l" || [ $? -eq 2 ] # 2: a problem found, reported
		done
	done
	settle_all "$@"
	for x in "$@"; do
		c1=$(tree_ticks "${pid[$x]}")
		if [ -n "${prof[$x]:-}" ]; then
			wait "${prof[$x]}" || echo "grownab.sh: no CPU profile of $x in round $r" >&2
		fi
		kill "${pid[$x]}"
		wait "${pid[$x]}" 2>/dev/null || true
		unset "pid[$x]"
		dir="$out/r$r-$x"
		rm -rf "$dir/data"
		python3 - "$dir/mxbench.jsonl" "${x^^}" "$((c1 - c0[$x]))" "$(getconf CLK_TCK)" >>"$out/results.tsv" <<'EOF'
import json, sys
rows = [json.loads(l)["metrics"] for l in open(sys.argv[1])]
sent = sum(m["sent"] for m in rows)
secs = sum(m["elapsed_s"] for m in rows)
cpu_ms = int(sys.argv[3]) * 1000 / int(sys.argv[4]) / sent
print("%s\t%.0f\t%.2f\t%s" % (sys.argv[2], sent / secs, cpu_ms, " ".join("%.0f" % m["messages_per_s"] for m in rows)))
EOF
		tail -1 "$out/results.tsv"
	done
}

printf 'build\tmsg/s\tcpu_ms\truns_msg/s\n'
for r in $(seq "$rounds"); do
	if [ -n "$together" ]; then
		start a "$bin_a" "$data"
		start b "$bin_b" "$data_b"
		measure a b
		continue
	fi
	if [ $((r % 2)) -eq 1 ]; then order="a b"; else order="b a"; fi
	for x in $order; do
		if [ "$x" = a ]; then start a "$bin_a" "$data"; else start b "$bin_b" "$data_b"; fi
		measure "$x"
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
pairs = list(zip(res.get("A", []), res.get("B", [])))
for i, label in ((0, "msg/s"), (1, "CPU per message")):
    r = sorted(b[i] / a[i] for a, b in pairs)
    if r:
        mid = r[len(r) // 2] if len(r) % 2 else (r[len(r) // 2 - 1] + r[len(r) // 2]) / 2
        print("  B / A within a round, %s: median %.3f (%.3f-%.3f)" % (label, mid, r[0], r[-1]))
EOF
