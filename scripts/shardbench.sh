#!/usr/bin/env bash
# Roomserver shard scaling benchmark (issue 17): does N shards' throughput grow with N when every
# shard gets the same slice of CPU?
#
#   scripts/shardbench.sh [-s "1 2 4"] [-q 0.12] [-n 3] [-r 40] [-m 50] [-i 10] [-d DENDRITE] [-o OUT_DIR]
#
# Must run as root: devcluster's --roomserver-cpu-quota puts each roomserver shard in a cgroup v1 of its
# own under /sys/fs/cgroup/cpu, capped at Q of one core (default 0.12), so that the shards, not the rest
# of the polylith, are the bottleneck. Builds dendrite, devcluster and mxbench (../shared/tools/mxbench,
# override with MXBENCH_DIR), then for each of -n rounds (default 3) and each shard count of -s (default
# "1 2 4", interleaved so that a change in the machine's load hits every count alike) starts a fresh
# devcluster (PostgreSQL, the Kafka-protocol broker, every component) and runs mxbench `spread` (-r rooms,
# default 40, each with its own sender sending -m messages, default 50). One line per run: the load average
# before it, msg/s, PUT p50/p99, mxbench's verdict, and per shard its CPU seconds during the scenario
# (cpuacct.usage of its cgroup), how long the cap held it back, and its share of the rooms (from the events
# it accepted, dendrite_roomserver_input_events_accepted_total: every room of the scenario gets the same
# events); then the roomserver's CPU milliseconds per message over all shards, and each shard's input
# messages per batch (a shard's per-batch costs, the topic check, transaction and produce, are shared by
# fewer messages when its batches are small). Before mxbench starts, every shard's CPU is read over
# -i seconds of the idle cluster (default 10): each shard's idle rate times the run's length is what
# the shard spent by the clock, not by the messages (its consumers' long-polls and log checks), and
# the roomserver's CPU per message is printed as measured and less that. -d runs a prebuilt dendrite
# (to compare two builds with the same driver). A run mxbench could not
# finish (on an oversubscribed machine: an event not in /sync within a minute) is listed as ERROR. At the
# end a summary per shard count: ranges over the rounds and the speed-up against one shard; the exit
# status is 1 if any run found problems or could not finish. Results (mxbench JSON, the
# status snapshots, the devcluster logs, results.tsv) go to OUT_DIR (default /tmp/shardbench).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
shards="1 2 4"
quota=0.12
rounds=3
rooms=40
messages=50
out=/tmp/shardbench
idle=10
prebuilt=
while getopts "s:q:n:r:m:o:i:d:" opt; do
	case "$opt" in
	s) shards=$OPTARG ;;
	q) quota=$OPTARG ;;
	n) rounds=$OPTARG ;;
	r) rooms=$OPTARG ;;
	m) messages=$OPTARG ;;
	o) out=$OPTARG ;;
	i) idle=$OPTARG ;;
	d) prebuilt=$(realpath "$OPTARG") ;;
	*)
		echo "usage: $0 [-s \"1 2 4\"] [-q CORES_PER_SHARD] [-n ROUNDS] [-r ROOMS] [-m MESSAGES_PER_ROOM] [-i IDLE_SECONDS] [-d DENDRITE] [-o OUT_DIR]" >&2
		exit 2
		;;
	esac
done
if [ "$(id -u)" -ne 0 ]; then
	echo "$0: must run as root: each roomserver shard gets a cgroup v1 CPU cap under /sys/fs/cgroup/cpu" >&2
	exit 1
fi
if [ ! -w /sys/fs/cgroup/cpu/cpu.cfs_quota_us ] && [ ! -w /sys/fs/cgroup/cpu ]; then
	echo "$0: /sys/fs/cgroup/cpu (cgroup v1 cpu controller) is missing or not writable" >&2
	exit 1
fi
mxbench_dir=${MXBENCH_DIR:-$root/../shared/tools/mxbench}
rm -rf "$out"
mkdir -p "$out"
chmod 700 "$out"
if [ -n "$prebuilt" ]; then
	cp "$prebuilt" "$out/dendrite"
else
	(cd "$root" && go build -o "$out/dendrite" ./cmd/dendrite)
fi
(cd "$root" && go build -o "$out/devcluster" ./cmd/devcluster)
(cd "$mxbench_dir" && go build -o "$out/mxbench" .)
cat >"$out/config.yaml" <<EOF
version: 1
global:
  server_name: shardbench.test
  data_dir: $out/data
  logging: {level: warn}
client_api:
  registration_disabled: false
  rate_limiting: {enabled: false}
EOF

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# snapshot FILE URL: /_devcluster/status with every shard's accepted-events counter added.
snapshot() {
	local st
	st=$(curl -sf "$2/_devcluster/status")
	python3 - "$1" "$st" <<'EOF'
import json, sys, time, urllib.request
st = json.loads(sys.argv[2])
st["at"] = time.time()
for p in st["processes"]:
    if p["component"] != "roomserver":
        continue
    want = {"dendrite_roomserver_input_events_accepted_total": "events_accepted",
            "dendrite_roomserver_input_messages_total": "messages", "dendrite_roomserver_input_batch_seconds_count": "batches"}
    for k in want.values():
        p[k] = 0.0
    with urllib.request.urlopen("http://%s/metrics" % p["internal"], timeout=10) as r:
        for line in r.read().decode().splitlines():
            f = line.split()
            if len(f) == 2 and f[0] in want:
                p[want[f[0]]] = float(f[1])
json.dump(st, open(sys.argv[1], "w"))
EOF
}

printf 'shards\tround\tload1\tmsg_per_s\tp50_ms\tp99_ms\tok\tshard_cpu_s\tshard_throttled_s\tshard_rooms\trs_cpu_ms_per_msg\tshard_msgs_per_batch\tshard_idle_cpu_pct\trs_cpu_ms_per_msg_less_idle\n' >"$out/results.tsv"
for round in $(seq 1 "$rounds"); do
	for n in $shards; do
		run="$out/n$n-r$round"
		mkdir -p "$run"
		rm -rf "$out/data"
		port=$(freeport)
		url="http://127.0.0.1:$port"
		"$out/devcluster" --config "$out/config.yaml" --http-bind-address "127.0.0.1:$port" --roomserver-shards "$n" \
			--roomserver-cpu-quota "$quota" --dendrite "$out/dendrite" >"$run/devcluster.log" 2>&1 &
		pid=$!
		for _ in $(seq 1 600); do
			if curl -sf "$url/_devcluster/status" 2>/dev/null | python3 -c 'import json,sys; sys.exit(0 if json.load(sys.stdin)["ready"] else 1)' 2>/dev/null; then
				break
			fi
			if ! kill -0 "$pid" 2>/dev/null; then
				echo "devcluster exited; see $run/devcluster.log" >&2
				exit 1
			fi
			sleep 0.2
		done
		load=$(cut -d' ' -f1 /proc/loadavg)
		snapshot "$run/idle.json" "$url"
		sleep "$idle"
		snapshot "$run/before.json" "$url"
		set +e
		"$out/mxbench" -hs "$url" -scenario spread -spread-rooms "$rooms" -messages "$messages" >"$run/mxbench.json" 2>"$run/mxbench.txt"
		rc=$?
		set -e
		snapshot "$run/after.json" "$url"
		kill -TERM "$pid"
		wait "$pid" || true
		if [ "$rc" -eq 1 ]; then
			# A timeout on an oversubscribed machine (an event not in /sync within a minute)
			# is a result too: the run is listed as ERROR and the others go on.
			echo "mxbench could not finish ($run/mxbench.txt):" >&2
			cat "$run/mxbench.txt" >&2
			printf '%s\t%s\t%s\t-\t-\t-\tERROR\t-\t-\t-\t-\t-\t-\t-\n' "$n" "$round" "$load" >>"$out/results.tsv"
			continue
		fi
		python3 - "$run" "$n" "$round" "$load" "$rooms" >>"$out/results.tsv" <<'EOF'
import json, sys
run, n, rnd, load, rooms = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
res = json.loads(open(run + "/mxbench.json").read().splitlines()[-1])
m = res["metrics"]
shard = lambda st: {p["shard"]: p for p in st["processes"] if p["component"] == "roomserver"}
sb, sa, si = json.load(open(run + "/before.json")), json.load(open(run + "/after.json")), json.load(open(run + "/idle.json"))
before, after, idle = shard(sb), shard(sa), shard(si)
cpu = [after[i].get("cpu_seconds", 0) - before[i].get("cpu_seconds", 0) for i in sorted(after)]
thr = [after[i].get("throttled_seconds", 0) - before[i].get("throttled_seconds", 0) for i in sorted(after)]
ev = [after[i]["events_accepted"] - before[i]["events_accepted"] for i in sorted(after)]
share = [rooms * e / sum(ev) if sum(ev) else 0 for e in ev]
delta = lambda k, i: after[i][k] - before[i][k]
per_batch = [delta("messages", i) / delta("batches", i) if delta("batches", i) else 0 for i in sorted(after)]
idle_rate = [(before[i].get("cpu_seconds", 0) - idle[i].get("cpu_seconds", 0)) / (sb["at"] - si["at"]) for i in sorted(after)]
less_idle = sum(cpu) - sum(idle_rate) * (sa["at"] - sb["at"])
print("\t".join([n, rnd, load, "%.0f" % m["messages_per_s"], "%.0f" % m["send_latency"]["p50_ms"],
    "%.0f" % m["send_latency"]["p99_ms"], "ok" if res["ok"] else "PROBLEMS",
    "+".join("%.1f" % c for c in cpu), "+".join("%.1f" % t for t in thr), "+".join("%.1f" % s for s in share),
    "%.2f" % (1000 * sum(cpu) / max(m["sent"], 1)), "+".join("%.1f" % b for b in per_batch),
    "+".join("%.2f" % (100 * r) for r in idle_rate), "%.2f" % (1000 * less_idle / max(m["sent"], 1))]))
EOF
		tail -n 1 "$out/results.tsv"
		if ls /sys/fs/cgroup/cpu | grep -q "^devcluster-$pid$"; then
			echo "devcluster left its cgroup /sys/fs/cgroup/cpu/devcluster-$pid behind" >&2
			exit 1
		fi
	done
done
python3 - "$out/results.tsv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
by = {}
for r in rows:
    if r["ok"] == "ERROR":
        continue
    by.setdefault(int(r["shards"]), []).append(r)
rng = lambda xs, f="%.0f": (f % min(xs)) if min(xs) == max(xs) else (f + "-" + f) % (min(xs), max(xs))
base = by.get(1)
print("\nshards  msg/s        speed-up   PUT p99 ms  roomserver CPU ms/msg  less idle   load1")
for n in sorted(by):
    rs = by[n]
    rate = [float(r["msg_per_s"]) for r in rs]
    up = rng([x / max(float(b["msg_per_s"]) for b in base) for x in rate] + [x / min(float(b["msg_per_s"]) for b in base) for x in rate], "%.2f") if base else "-"
    print("%-7d %-12s %-10s %-11s %-22s %-11s %s" % (n, rng(rate), up, rng([float(r["p99_ms"]) for r in rs]),
        rng([float(r["rs_cpu_ms_per_msg"]) for r in rs], "%.2f"), rng([float(r["rs_cpu_ms_per_msg_less_idle"]) for r in rs], "%.2f"),
        rng([float(r["load1"]) for r in rs], "%.1f")))
bad = [r for r in rows if r["ok"] != "ok"]
if bad:
    print("%d run(s) found problems or could not finish: see their mxbench.txt" % len(bad))
    sys.exit(1)
EOF
