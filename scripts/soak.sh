#!/usr/bin/env bash
# Soak benchmark (issue 18): does a long-running monolith, or polylith, stay small and fast?
#
#   scripts/soak.sh [-m MESSAGES] [-i INTERVAL] [-c CONFIG_OVERRIDES.yaml] [-o OUT_DIR] [-p [-s SHARDS]]
#
# Builds the monolith and mxbench (../shared/tools/mxbench, override with MXBENCH_DIR), starts the monolith on a
# fresh data directory with the default config (open registration, rate limiting off, logging at warn), then
# runs mxbench `send` (20 users x 100 messages into a new room) again and again until MESSAGES (default 200000)
# messages have been sent: 100 rooms and 2,000 registered users for the default, every user's live /sync loop
# running during its own run. Each run starts once the server is idle (under a tenth of a core for half a
# second; see settle), so that no run inherits the previous one's backlog. After every INTERVAL messages
# (default 20000; a multiple of 2000, or of 20 below 2000, when each run sends INTERVAL messages, 20 users x
# INTERVAL/20, so that a short run prints several lines) it prints one line: messages sent, the run's msg/s
# and PUT p99, the server's CPU per message over the step (cpu_ms: everything it did, background work
# included, over the messages sent), its RSS and Go heap (in use, from /metrics), the bytes of every cache,
# SQLite's memory, and the data directory's size per database (with its WAL; those over 0.1 MiB) and in
# total. Every mxbench run also checks that nothing was lost, duplicated or reordered; the
# script goes on after a run that found a problem, counts them, and exits 1 at the end if any was more than a
# live /sync's limited timeline (below), or at once when mxbench could not run. Results (mxbench JSON lines, the samples as TSV and the server log) go to
# OUT_DIR (default /tmp/dendrite-soak), and with every line a heap profile (heap/dendrite-MESSAGES.pprof; compare
# two with `go tool pprof -base`).
#
# -p runs the polylith instead: devcluster (built here too; -s roomserver shards, default 1) with PostgreSQL
# and the Kafka-protocol broker, the same config. Its lines have, after messages, msg/s and PUT p99, every
# component process's RSS/Go heap in use (MiB, the heap from its /metrics), the broker's and devcluster's
# (the front proxy's) RSS, PostgreSQL's PSS summed over the postmaster and its children (shared buffers
# counted once, split among the processes that touched them), PostgreSQL's bytes on disk per component (its
# tables with their indexes and TOAST, by table-name prefix, those over 0.1 MiB), its WAL and its database
# in total (pg_database_size, without the WAL), the broker's log directory, and the processes devcluster
# restarted. Each line's figures are also in procs.tsv and disk.tsv, and every process's heap profile in
# heap/NAME-MESSAGES.pprof (compare two with `go tool pprof -base`); devcluster's log is devcluster.log.
#
# At the end, both modes print a summary with PASS/FAIL against issue 18's targets: the throughput of the
# first and the last INTERVAL (sent messages over the runs' sending time) and their ratio (the last within
# 10% of the first; beside it the trend of every run's msg/s, a least-squares line; the two steps are minutes
# apart, on a machine whose speed may change as much: scripts/grownab.sh -s -d - -D OUT_DIR/data compares the
# grown server with an empty one at the same time), RSS at the end against 150 MB (each component process in
# the polylith; the broker, PostgreSQL and devcluster are listed without a target), the growth in bytes on
# disk per message of every database (and, in the polylith, of the WAL and the broker's log), the embedded
# log's share of the data directory (monolith; under 10%), and what mxbench found lost, duplicated or out of
# order. A run whose only finding is events missing from a live /sync whose timeline came back limited (more
# new events between two syncs than the filter's limit of 100; the client pages back from prev_batch), with
# its /messages walk complete, is counted apart as a gap. Only mxbench's other findings make the exit status
# non-zero.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
messages=200000
interval=20000
overrides=
out=/tmp/dendrite-soak
poly=
shards=
usage() {
	echo "usage: $0 [-m MESSAGES] [-i INTERVAL] [-c CONFIG_OVERRIDES.yaml] [-o OUT_DIR] [-p [-s SHARDS]]" >&2
	exit 2
}
while getopts "m:i:c:o:ps:" opt; do
	case "$opt" in
	m) messages=$OPTARG ;;
	i) interval=$OPTARG ;;
	c) overrides=$OPTARG ;;
	o) out=$OPTARG ;;
	p) poly=1 ;;
	s) shards=$OPTARG ;;
	*) usage ;;
	esac
done
[ "$OPTIND" -gt $# ] || usage
if [ -n "$shards" ] && [ -z "$poly" ]; then
	echo "$0: -s needs -p" >&2
	usage
fi
shards=${shards:-1}
for n in "$messages" "$interval" "$shards"; do
	case $n in '' | *[!0-9]* | 0*) usage ;; esac
done
# Each mxbench run sends run messages (20 users x run/20): 2000, or the interval when it is smaller.
if [ "$interval" -ge 2000 ]; then
	run=2000
else
	run=$interval
fi
if [ $((interval % run)) -ne 0 ] || [ $((run % 20)) -ne 0 ]; then
	echo "$0: -i $interval: must be a multiple of 2000, or of 20 below 2000" >&2
	exit 2
fi
mxbench_dir=${MXBENCH_DIR:-$root/../shared/tools/mxbench}
rm -rf "$out"
mkdir -p "$out/data"
chmod 700 "$out" "$out/data"
(cd "$root" && go build -o "$out/dendrite" ./cmd/dendrite)
[ -z "$poly" ] || (cd "$root" && go build -o "$out/devcluster" ./cmd/devcluster)
(cd "$mxbench_dir" && go build -o "$out/mxbench" .)

# shellcheck source=scripts/idle.sh
. "$root/scripts/idle.sh"
port=$(freeport)
metrics=$(freeport)
if [ -z "$poly" ]; then
	metrics_config="{enabled: true, listen: \"127.0.0.1:$metrics\"}"
else
	metrics_config="{enabled: true}" # every process serves /metrics on its internal listener
fi
cat >"$out/config.yaml" <<EOF
version: 1
global:
  server_name: soak.test
  data_dir: $out/data
  logging: {level: warn}
  metrics: $metrics_config
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
url="http://127.0.0.1:$port"
if [ -z "$poly" ]; then
	"$out/dendrite" --config "$out/config.yaml" --http-bind-address "127.0.0.1:$port" >"$out/server.log" 2>&1 &
	pid=$!
	trap 'kill $pid 2>/dev/null || true' EXIT
	for _ in $(seq 100); do
		curl -fsS "$url/_matrix/client/versions" >/dev/null 2>&1 && break
		sleep 0.2
	done
else
	"$out/devcluster" --config "$out/config.yaml" --http-bind-address "127.0.0.1:$port" --roomserver-shards "$shards" \
		--dendrite "$out/dendrite" >"$out/devcluster.log" 2>&1 &
	pid=$!
	# devcluster stops the components, the broker and PostgreSQL on SIGTERM; wait for it.
	trap 'kill $pid 2>/dev/null && wait $pid || true' EXIT
	until curl -fsS "$url/_devcluster/status" >/dev/null 2>&1; do
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "soak.sh: devcluster exited; see $out/devcluster.log" >&2
			exit 1
		fi
		sleep 0.5
	done
fi
# The processes whose CPU tells whether the server is idle (settle): the monolith, or devcluster with its
# children (the components and the broker) and PostgreSQL's postmaster, which pg_ctl started apart.
busy_pids=$pid
if [ -n "$poly" ]; then
	busy_pids="$pid $(curl -sS "$url/_devcluster/status" | python3 -c 'import json, sys; print(json.load(sys.stdin)["postgres"]["pid"])')"
fi
mkdir -p "$out/heap"

# settle waits until the server is idle: under a tenth of a core over half a second (at most two minutes).
# mxbench's sends return before the push reader, the search indexer and the other consumers have applied
# them; run back to back, the first run would start with nothing behind it and every later one with the
# last run's backlog, so the first step's throughput would count work the second step pays for. Every run
# starts from an idle server instead; the CPU per message still counts all the work.
settle() {
	# shellcheck disable=SC2086 # one argument per PID
	wait_idle $busy_pids ||
		echo "soak.sh: the server did not go idle within two minutes after $sent messages; running on" >&2
}
# sample prints one TSV line: messages, msg/s and p99 of the last run, RSS, Go heap in use, cache bytes, SQLite's
# memory (all of it, and in brackets its cached pages), and
# the size of each file of the data directory in MiB. The size of every database, in bytes, also goes to
# disk.tsv for the summary.
sample() {
	local sent=$1 rate=$2 p99=$3
	local rss heap cache sqlite files ticks cpu=-
	rss=$(awk '/VmRSS/ {printf "%.1f", $2/1024}' "/proc/$pid/status")
	# The server's CPU (user + system; tree_ticks) since the last line, per message sent in between.
	ticks=$(tree_ticks "$pid")
	if [ "$sent" -gt "$cpu_sent" ]; then
		cpu=$(awk -v t=$((ticks - cpu_ticks)) -v hz="$clk_tck" -v n=$((sent - cpu_sent)) 'BEGIN {printf "%.2f", t * 1000 / hz / n}')
	fi
	cpu_ticks=$ticks cpu_sent=$sent
	local m
	m=$(curl -fsS "http://127.0.0.1:$metrics/metrics")
	curl -fsS "http://127.0.0.1:$metrics/debug/pprof/heap" -o "$out/heap/dendrite-$sent.pprof"
	heap=$(echo "$m" | awk '$1 == "go_memstats_heap_inuse_bytes" {printf "%.1f", $2/1048576}')
	cache=$(echo "$m" | awk '/^dendrite_cache_bytes/ {s += $2} END {printf "%.1f", s/1048576}')
	sqlite=$(echo "$m" | awk '/^dendrite_sqlite_memory_bytes\{kind="total"/ {t = $2} /^dendrite_sqlite_memory_bytes\{kind="page_cache"/ {p = $2}
		END {printf "%.1f(%.1f)", t/1048576, p/1048576}')
	files=$(cd "$out/data" && du -k -- *.db* 2>/dev/null | awk '{n = $2; sub(/\.db.*/, "", n); s[n] += $1; t += $1}
		END {for (n in s) if (s[n] >= 102.4) printf "%s=%.1f ", n, s[n]/1024; printf "total=%.1f", t/1024}')
	(cd "$out/data" && du -k -- *.db* 2>/dev/null) | awk -v sent="$sent" '{n = $2; sub(/\.db.*/, "", n); s[n] += $1; t += $1}
		END {for (n in s) printf "%s\t%s\t%d\n", sent, n, s[n]*1024; printf "%s\ttotal\t%d\n", sent, t*1024}' >>"$out/disk.tsv"
	printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$sent" "$rate" "$p99" "$cpu" "$rss" "$heap" "$cache" "$sqlite" "$files" |
		tee -a "$out/samples.tsv"
}

# sample_poly prints the polylith's line (with the header first when asked) from /_devcluster/status, /proc,
# every process's /metrics and PostgreSQL, and saves every process's heap profile.
sample_poly() {
	python3 - "$out" "$url" "$pid" "$@" <<'EOF' | tee -a "$out/samples.tsv"
import json, os, subprocess, sys, urllib.error, urllib.request
out, url, devpid, sent, rate, p99 = sys.argv[1:7]
header = len(sys.argv) > 7

def get(u):
    try:
        return urllib.request.urlopen(u, timeout=60).read()
    except urllib.error.HTTPError as e:  # /_devcluster/status is 503 while a process is not ready
        return e.read()

def proc_kb(pid, path, key):
    try:
        for line in open("/proc/%d/%s" % (pid, path)):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None

def mib(kb):
    return "-" if kb is None else "%.1f" % (kb / 1024)

def children(pid):
    kids = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = open("/proc/%s/stat" % d).read()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d))
    return kids

def disk_bytes(top):
    total = 0
    for d, _, files in os.walk(top):
        for f in files:
            try:
                total += os.lstat(os.path.join(d, f)).st_blocks * 512
            except OSError:
                pass
    return total

st = json.loads(get(url + "/_devcluster/status"))
procs = st["processes"]
if header:
    print("\t".join(["messages", "msg/s", "p99_ms"] + [p["name"] + "_rss/heap" for p in procs]
        + ["broker_rss", "devcluster_rss", "pg_pss", "pg_mib", "broker_log_mib", "restarts"]))
cols, rows = [], []
for p in procs:
    rss = proc_kb(p["pid"], "status", "VmRSS") if p["pid"] else None
    heap = None
    try:
        for line in get("http://%s/metrics" % p["internal"]).decode().splitlines():
            f = line.split()
            if len(f) == 2 and f[0] == "go_memstats_heap_inuse_bytes":
                heap = float(f[1]) / 1024
        prof = get("http://%s/debug/pprof/heap" % p["internal"])
        open(os.path.join(out, "heap", "%s-%s.pprof" % (p["name"], sent)), "wb").write(prof)
    except OSError:
        pass
    cols.append("%s/%s" % (mib(rss), mib(heap)))
    rows.append((p["name"], rss, heap))
broker = proc_kb(st["broker"]["pid"], "status", "VmRSS") if st["broker"]["pid"] else None
devcluster = proc_kb(int(devpid), "status", "VmRSS")
pg = st["postgres"]["pid"]
pss = None
if pg:
    pss = sum(proc_kb(q, "smaps_rollup", "Pss") or 0 for q in [pg] + children(pg))
rows += [("broker", broker, None), ("devcluster", devcluster, None), ("postgres", pss, None)]
with open(os.path.join(out, "procs.tsv"), "a") as f:
    for name, rss, heap in rows:
        f.write("%s\t%s\t%s\t%s\n" % (sent, name, "" if rss is None else rss * 1024, "" if heap is None else heap * 1024))

sql = """SELECT split_part(c.relname, '_', 1), sum(pg_total_relation_size(c.oid))::bigint FROM pg_class c
  JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname = 'public' GROUP BY 1
UNION ALL SELECT 'wal', coalesce(sum(size), 0)::bigint FROM pg_ls_waldir()
UNION ALL SELECT 'total', pg_database_size(current_database())"""
res = subprocess.run(["psql", "-X", "-A", "-t", "-F", "\t", "-d", st["postgres"]["dsn"], "-c", sql],
    capture_output=True, text=True)
if res.returncode:
    sys.stderr.write("soak.sh: PostgreSQL's sizes: %s" % res.stderr)
sizes = {}
for line in res.stdout.splitlines():
    name, n = line.split("\t")
    sizes[name] = int(n)
log = disk_bytes(st["broker"]["data"]) if st["broker"].get("data") else None
with open(os.path.join(out, "disk.tsv"), "a") as f:
    for name, n in sizes.items():
        f.write("%s\t%s\t%d\n" % (sent, name, n))
    if log is not None:
        f.write("%s\tbroker_log\t%d\n" % (sent, log))
shown = " ".join("%s=%.1f" % (k, v / 1048576) for k, v in sorted(sizes.items())
    if k not in ("wal", "total") and v >= 0.1 * 1048576)
pgcol = "-" if not sizes else (shown + " " if shown else "") + "wal=%.1f total=%.1f" % (sizes["wal"] / 1048576, sizes["total"] / 1048576)
restarts = ",".join("%s+%d" % (p["name"], p["starts"] - 1) for p in procs + [st["broker"]] if p["starts"] > 1) or "-"
print("\t".join([sent, rate, p99] + cols + [mib(broker), mib(devcluster), mib(pss), pgcol,
    "-" if log is None else "%.1f" % (log / 1048576), restarts]))
EOF
}

clk_tck=$(getconf CLK_TCK)
if [ -z "$poly" ]; then
	printf 'messages\tmsg/s\tp99_ms\tcpu_ms\trss_mib\theap_mib\tcache_mib\tsqlite_mib\tdata_mib\n' | tee "$out/samples.tsv"
	cpu_ticks=0 cpu_sent=0
	sample 0 - -
else
	sample_poly 0 - - header
fi
sent=0
problems=0
runs=0
next=$interval
while [ "$sent" -lt "$messages" ]; do
	settle
	status=0
	"$out/mxbench" -hs "$url" -scenario send -users 20 -messages $((run / 20)) -settle 0 \
		>>"$out/mxbench.jsonl" 2>>"$out/mxbench.txt" || status=$?
	case $status in
	0) ;;
	2) problems=$((problems + 1)) ;;
	*)
		echo "soak.sh: mxbench could not run after $sent messages; see $out/mxbench.txt" >&2
		exit 1
		;;
	esac
	runs=$((runs + 1))
	sent=$((sent + run))
	echo "$next" >>"$out/runs.txt" # the line (messages) this run is reported in, for the summary
	if [ "$sent" -ge "$next" ] || [ "$sent" -ge "$messages" ]; then
		settle # the step's line counts the work its runs left behind
		read -r rate p99 < <(tail -1 "$out/mxbench.jsonl" | python3 -c '
import json, sys
m = json.load(sys.stdin)["metrics"]
print(round(m["messages_per_s"]), round(m["send_latency"]["p99_ms"], 1))')
		if [ -z "$poly" ]; then
			sample "$sent" "$rate" "$p99"
		else
			sample_poly "$sent" "$rate" "$p99"
		fi
		next=$((next + interval))
	fi
done
log_share=
if [ -z "$poly" ]; then
	log_share="$( (cd "$out/data" && du -ck -- eventlog.db* 2>/dev/null || echo 0 total) | awk '$2 == "total" {printf "%.0f\n", $1 * 1024}') $(du -sk "$out/data" | awk '{printf "%.0f\n", $1 * 1024}')"
fi
echo "soak.sh: $problems of $runs mxbench runs reported problems (see $out/mxbench.txt); the summary tells gaps in" \
	"a live /sync's limited timelines from losses"

# The summary against issue 18's targets.
python3 - "$out" "${poly:-0}" "$sent" "$log_share" <<'EOF'
import collections, json, sys
out, poly, sent, log_share = sys.argv[1], sys.argv[2] == "1", int(sys.argv[3]), sys.argv[4]
MB = 150e6
verdict = lambda ok: "PASS" if ok else "FAIL"
print("\nsummary (issue 18 targets)")

results = [json.loads(l) for l in open(out + "/mxbench.jsonl") if l.strip()]
lines = [int(l) for l in open(out + "/runs.txt")]
steps = collections.OrderedDict()
for line, r in zip(lines, results):
    m = r["metrics"]
    s = steps.setdefault(line, [0, 0.0])
    s[0] += m["sent"]
    s[1] += m["elapsed_s"]
rate = lambda s: s[0] / s[1] if s[1] else 0.0
keys = list(steps)
first, last = steps[keys[0]], steps[keys[-1]]
ratio = rate(last) / rate(first) if rate(first) else 0.0
if len(keys) < 2:
    print("  throughput: only one step (%.0f msg/s): nothing to compare" % rate(first))
else:
    print("  throughput: first step (to %d) %.0f msg/s, last step (to %d) %.0f msg/s, ratio %.2f (target >= 0.90): %s"
          % (keys[0], rate(first), min(keys[-1], sent), rate(last), ratio, verdict(ratio >= 0.9)))
    # The two steps' rates swing by 10-15% from one soak to the next on a quiet machine (a step is
    # 10 runs); a least-squares line through every run's msg/s shows the trend under that noise.
    if len(results) >= 3:
        ys = [r["metrics"]["messages_per_s"] for r in results]
        n = len(ys)
        mx, my = (n - 1) / 2, sum(ys) / n
        slope = sum((x - mx) * (y - my) for x, y in enumerate(ys)) / sum((x - mx) ** 2 for x in range(n))
        at0, atn = my - slope * mx, my + slope * mx
        print("  throughput trend (least squares over the %d runs' msg/s): %.0f at the first run, %.0f at the last, ratio %.2f"
              % (n, at0, atn, atn / at0 if at0 else 0.0))

if poly:
    procs = collections.OrderedDict()
    for l in open(out + "/procs.tsv"):
        n, name, rss, heap = l.rstrip("\n").split("\t")
        procs[name] = (n, rss, heap)
    bad = 0
    for name, (n, rss, heap) in procs.items():
        target = name not in ("broker", "devcluster", "postgres")
        if rss == "":
            print("  RSS at %s messages: %-16s unknown (not running)%s" % (n, name, ": FAIL" if target else ""))
            bad += target
            continue
        what = "PSS" if name == "postgres" else "RSS"
        s = "  %s at %s messages: %-16s %6.1f MiB" % (what, n, name, float(rss) / 1048576)
        if heap:
            s += " (Go heap %.1f MiB)" % (float(heap) / 1048576)
        if target:
            s += ", target <= 150 MB: %s" % verdict(float(rss) <= MB)
            bad += float(rss) > MB
        else:
            s += " (not a Dendrite process: no target)"
        print(s)
    print("  RSS of every component process <= 150 MB: %s" % verdict(bad == 0))
else:
    samples = [l.split("\t") for l in open(out + "/samples.tsv").read().splitlines()[1:]]
    last_sample = samples[-1]
    rss = float(last_sample[4])
    print("  RSS at %s messages: %.1f MiB (Go heap %s MiB), target <= 150 MB (143.1 MiB): %s"
          % (last_sample[0], rss, last_sample[5], verdict(rss * 1048576 <= MB)))
    # The server's CPU per message over a step does not depend on how busy the rest of the machine is (mxbench
    # shares it), so it tells a server that got slower from a machine that did.
    cpu = [(s[0], float(s[3])) for s in samples if s[3] != "-"]
    if len(cpu) >= 2:
        print("  server CPU per message (everything it did during the step, over the messages sent): first step %.2f ms, "
              "last step %.2f ms, ratio %.2f (no target)" % (cpu[0][1], cpu[-1][1], cpu[-1][1] / cpu[0][1]))

disk = collections.defaultdict(dict)
for l in open(out + "/disk.tsv"):
    n, name, b = l.rstrip("\n").split("\t")
    disk[int(n)][name] = int(b)
start, end = disk[0], disk[max(disk)]
if sent:
    per = ", ".join("%s %.0f" % (name, (end[name] - start.get(name, 0)) / sent)
                    for name in sorted(end, key=lambda k: (k == "total", -(end[k] - start.get(k, 0)))))
    print("  bytes on disk per message (growth from 0 to %d messages%s): %s"
          % (max(disk), "; PostgreSQL total is its database without the WAL" if poly else "", per))

if not poly:
    log, data = (int(x) for x in log_share.split())
    share = log / data if data else 0.0
    print("  embedded log: %.1f MiB of the data directory's %.1f MiB (%.1f%%), target < 10%%: %s"
          % (log / 1048576, data / 1048576, 100 * share, verdict(share < 0.1)))

count = collections.Counter()
for r in results:
    m = r["metrics"]
    for check in ("sync_check", "history_check"):
        for k in ("lost", "duplicates", "out_of_order", "unexpected"):
            count[k] += m[check][k]
    count["txn_replay_mismatches"] += m["txn_replay_mismatches"]
# A run whose only finding is events missing from a live /sync that had limited timelines
# (more new events than the filter's limit between two syncs: the spec's answer is a gap
# the client fills from prev_batch), while its /messages walk held every event once and in
# order, found a gap, not a loss.
def gap_only(r):
    m = r["metrics"]
    h, s = m["history_check"], m["sync_check"]
    return (m.get("sync_limited_timelines", 0) > 0 and m["txn_replay_mismatches"] == 0
            and all(h[k] == 0 for k in ("lost", "duplicates", "out_of_order", "unexpected"))
            and all(s[k] == 0 for k in ("duplicates", "out_of_order", "unexpected")))
failed = [r for r in results if not r["ok"]]
gapped = [r for r in failed if gap_only(r)]
found = len(failed) - len(gapped)
print("  mxbench: %d of %d runs had a live /sync with limited timelines and nothing else (%d events left to the client "
      "to page back; each run's /messages walk held every event once, in order)"
      % (len(gapped), len(results), sum(r["metrics"]["sync_check"]["lost"] for r in gapped)))
print("  mxbench: %d of %d runs found problems (lost %d, duplicated %d, out of order %d, unexpected %d, transaction replay "
      "mismatches %d; lost counts the gaps above): %s"
      % (found, len(results), count["lost"], count["duplicates"], count["out_of_order"], count["unexpected"],
         count["txn_replay_mismatches"], verdict(found == 0)))
sys.exit(1 if found else 0)
EOF
