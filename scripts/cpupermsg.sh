#!/usr/bin/env bash
# CPU per message, monolith against polylith on the same engine and log (issue 17):
#
#   scripts/cpupermsg.sh [-n ROUNDS] [-u USERS] [-m MESSAGES] [-p PROFILE_SECONDS] [-d DENDRITE] [-o OUT_DIR]
#
# Must run as root (PostgreSQL runs as the postgres user, as internal/pgcluster does). Builds dendrite,
# devcluster and mxbench (../shared/tools/mxbench, override with MXBENCH_DIR), then for each of -n rounds
# (default 3) runs mxbench `send` (-u users, default 20, each sending -m messages, default 100, into one
# room) against two fresh deployments, one after the other so that a change in the machine's load hits
# both alike:
#   mono: the monolith (`dendrite`) on a throwaway PostgreSQL cluster (initdb and pg_ctl with
#         pgcluster's settings: durability off) and devcluster's Kafka-protocol broker
#         (`devcluster broker`), global.log.kind: kafka;
#   poly: `devcluster --roomserver-shards 1` (the same broker and PostgreSQL settings, every component a
#         process of its own, the front proxy).
# Both use the same config (open registration, rate limiting off, logging at warn, bcrypt cost 4 so that
# the 20 registrations weigh little). For every process it reads utime+stime from /proc/PID/stat before
# and after the scenario: the monolith or each component, the broker, the proxy (devcluster's own
# process), PostgreSQL (the postmaster with its children's CPU, cutime+cstime, plus every live backend)
# and mxbench. "After" is when the deployment has gone idle again (consumers that lag the last request
# still work for those messages), at most 30 s after mxbench ends. Before the scenario it also measures
# each process's CPU over 5 s of idling, so that the per-message figures can be told from the fixed cost
# of idle processes polling their logs ("less idle": the run's CPU less each process's idle rate times
# the run's length, from the start of mxbench to idle again). Reported per run: load averages before and after, msg/s,
# mxbench's verdict, and per process CPU milliseconds per message sent; then per process the range over
# rounds and the ratio of the polylith's server CPU per message (every process but mxbench) to the
# monolith's. CPU seconds do not depend on how long a process waited for a core, so they hold on a busy
# machine where rates do not; the rates are printed for reference only.
#
# -p S takes a CPU profile of S seconds (the Go profiler, /debug/pprof/profile) from the monolith and
# from every component while mxbench runs (the profiler's own cost is then in the figures).
# -d DENDRITE runs a prebuilt dendrite binary (in both deployments) instead of building this tree's, to
# compare two builds with the same driver.
# Results (per run: mxbench JSON, cpu.json, the logs, profiles; results.tsv) go to OUT_DIR (default
# /tmp/cpupermsg). The exit status is 1 if any run found problems or could not finish.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
rounds=3
users=20
messages=100
profile=0
out=/tmp/cpupermsg
dendrite=
while getopts "n:u:m:p:d:o:" opt; do
	case "$opt" in
	n) rounds=$OPTARG ;;
	u) users=$OPTARG ;;
	m) messages=$OPTARG ;;
	p) profile=$OPTARG ;;
	d) dendrite=$(realpath "$OPTARG") ;;
	o) out=$OPTARG ;;
	*)
		echo "usage: $0 [-n ROUNDS] [-u USERS] [-m MESSAGES] [-p PROFILE_SECONDS] [-d DENDRITE] [-o OUT_DIR]" >&2
		exit 2
		;;
	esac
done
if [ "$(id -u)" -ne 0 ]; then
	echo "$0: must run as root: PostgreSQL runs as the postgres user" >&2
	exit 1
fi
mxbench_dir=${MXBENCH_DIR:-$root/../shared/tools/mxbench}
rm -rf "$out"
mkdir -p "$out"
chmod 700 "$out"
if [ -n "$dendrite" ]; then
	cp "$dendrite" "$out/dendrite"
else
	(cd "$root" && go build -o "$out/dendrite" ./cmd/dendrite)
fi
(cd "$root" && go build -o "$out/devcluster" ./cmd/devcluster)
(cd "$mxbench_dir" && go build -o "$out/mxbench" .)

freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pgbin() { command -v "$1" 2>/dev/null || ls /usr/lib/postgresql/*/bin/"$1" | tail -n 1; }

# The measurement: cpu.py run SPEC_JSON OUT_DIR -- MXBENCH ARGS... measures idle CPU, runs mxbench,
# waits for the deployment to go idle and writes OUT_DIR/cpu.json.
cat >"$out/cpu.py" <<'EOF'
import json, os, subprocess, sys, threading, time, urllib.request

TICK = os.sysconf("SC_CLK_TCK")

def stat(pid):
    with open("/proc/%d/stat" % pid) as f:
        s = f.read()
    fl = s[s.rindex(")") + 2:].split()
    # fields from 3 on: state ppid ... utime(14) stime(15) cutime(16) cstime(17)
    return int(fl[1]), int(fl[11]), int(fl[12]), int(fl[13]), int(fl[14])

def cpu(proc):
    """CPU seconds of one process; for PostgreSQL the postmaster, its reaped children and every live child."""
    pid, kind = proc["pid"], proc.get("kind", "")
    try:
        _, u, s, cu, cs = stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return None
    if kind != "postgres":
        return (u + s) / TICK
    total = u + s + cu + cs
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            ppid, u2, s2, _, _ = stat(int(d))
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
        if ppid == pid:
            total += u2 + s2
    return total / TICK

def snapshot(procs):
    return {p["name"]: cpu(p) for p in procs}

def total(snap):
    return sum(v for v in snap.values() if v is not None)

def loadavg():
    return open("/proc/loadavg").read().split()[:3]

def main():
    spec, rundir, args = json.load(open(sys.argv[1])), sys.argv[2], sys.argv[4:]
    procs, profile = spec["processes"], int(spec.get("profile", 0))
    res = {"load_before": loadavg()}
    # Idle: 5 s with no client.
    a = snapshot(procs)
    time.sleep(5)
    b = snapshot(procs)
    res["idle_cpu_per_s"] = {k: (b[k] - a[k]) / 5 for k in a if a[k] is not None and b[k] is not None}
    idle_rate = sum(res["idle_cpu_per_s"].values())
    threads = []
    before = snapshot(procs)
    t0 = time.time()
    mx = subprocess.Popen(args, stdout=open(rundir + "/mxbench.json", "w"), stderr=open(rundir + "/mxbench.txt", "w"))
    if profile:
        for p in procs:
            if not p.get("debug"):
                continue
            def fetch(p=p):
                try:
                    with urllib.request.urlopen("http://%s/debug/pprof/profile?seconds=%d" % (p["debug"], profile), timeout=profile + 30) as r:
                        open("%s/%s.pprof" % (rundir, p["name"]), "wb").write(r.read())
                except OSError as e:
                    print("profile of %s: %s" % (p["name"], e), file=sys.stderr)
            th = threading.Thread(target=fetch)
            th.start()
            threads.append(th)
    _, status, ru = os.wait4(mx.pid, 0)
    mx.returncode = os.waitstatus_to_exitcode(status)
    res["mxbench_rc"] = mx.returncode
    res["scenario_s"] = time.time() - t0
    res["mxbench_cpu_s"] = ru.ru_utime + ru.ru_stime
    # Settle: until the deployment's CPU rate over 0.5 s is within 5% of a core of its idle rate, twice
    # in a row, at most 30 s.
    t1, quiet, prev = time.time(), 0, snapshot(procs)
    while time.time() - t1 < 30 and quiet < 2:
        time.sleep(0.5)
        cur = snapshot(procs)
        quiet = quiet + 1 if total(cur) - total(prev) < (idle_rate + 0.05) * 0.5 else 0
        prev = cur
    after = prev
    for th in threads:
        th.join()
    res["settle_s"] = time.time() - t1
    res["window_s"] = time.time() - t0
    res["load_after"] = loadavg()
    res["cpu_s"] = {k: after[k] - before[k] for k in before if before[k] is not None and after[k] is not None}
    res["restarted"] = [k for k in before if before[k] is None or after[k] is None]
    json.dump(res, open(rundir + "/cpu.json", "w"), indent=1)

main()
EOF

cat >"$out/config.yaml" <<EOF
version: 1
global:
  server_name: cpupermsg.test
  data_dir: $out/data
  logging: {level: warn}
client_api:
  registration_disabled: false
  rate_limiting: {enabled: false}
user_api:
  bcrypt_cost: 4
EOF

# wait_url URL PID LOG: until URL answers 200, or fail if PID exits.
wait_url() {
	for _ in $(seq 1 900); do
		if curl -sf "$1" >/dev/null 2>&1; then
			return 0
		fi
		if ! kill -0 "$2" 2>/dev/null; then
			echo "$0: process $2 exited; see $3" >&2
			exit 1
		fi
		sleep 0.2
	done
	echo "$0: $1 not ready after 180 s; see $3" >&2
	exit 1
}

pgdir=
pgstop() {
	if [ -n "$pgdir" ]; then
		runuser -u postgres -- "$(pgbin pg_ctl)" -D "$pgdir/data" -m fast -w stop >/dev/null 2>&1 || true
		rm -rf "$pgdir"
		pgdir=
	fi
}
pids=()
cleanup() {
	for p in "${pids[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${pids[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	pids=()
	pgstop
}
trap cleanup EXIT

# run_mono RUN_DIR: the monolith on its own PostgreSQL and broker.
run_mono() {
	local run=$1 pgport bport port dbg dsn mpid bpid postmaster
	pgdir=$(mktemp -d /tmp/cpupermsg-pg.XXXXXX)
	chmod 755 "$pgdir"
	chown postgres: "$pgdir"
	pgport=$(freeport)
	runuser -u postgres -- "$(pgbin initdb)" -D "$pgdir/data" -U postgres -A trust -E UTF8 --no-sync >"$run/initdb.log" 2>&1
	runuser -u postgres -- "$(pgbin pg_ctl)" -D "$pgdir/data" -l "$pgdir/log" -w -t 30 \
		-o "-p $pgport -k $pgdir -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off -c synchronous_commit=off -c max_connections=1000 -c shared_buffers=64MB" start >/dev/null
	psql -q -h 127.0.0.1 -p "$pgport" -U postgres -c "CREATE DATABASE dendrite" postgres
	postmaster=$(head -n 1 "$pgdir/data/postmaster.pid")
	dsn="postgres://postgres@127.0.0.1:$pgport/dendrite?sslmode=disable"
	bport=$(freeport)
	"$out/devcluster" broker --addr "127.0.0.1:$bport" --data "$run/broker" >"$run/broker.log" 2>&1 &
	bpid=$!
	pids+=("$bpid")
	port=$(freeport)
	dbg=$(freeport)
	python3 - "$out/config.yaml" "$run/config.yaml" "$dsn" "127.0.0.1:$bport" "127.0.0.1:$dbg" <<'EOF'
import sys, yaml
c = yaml.safe_load(open(sys.argv[1]))
c["global"]["database"] = {"connection_string": sys.argv[3]}
c["global"]["log"] = {"kind": "kafka", "kafka": {"brokers": [sys.argv[4]]}}
c["global"]["metrics"] = {"enabled": True, "listen": sys.argv[5]}
yaml.safe_dump(c, open(sys.argv[2], "w"))
EOF
	"$out/dendrite" --config "$run/config.yaml" --http-bind-address "127.0.0.1:$port" >"$run/dendrite.log" 2>&1 &
	mpid=$!
	pids+=("$mpid")
	wait_url "http://127.0.0.1:$port/ready" "$mpid" "$run/dendrite.log"
	python3 - "$run/spec.json" "$mpid" "$bpid" "$postmaster" "127.0.0.1:$dbg" "$profile" <<'EOF'
import json, sys
_, path, mpid, bpid, pm, dbg, prof = sys.argv
json.dump({"profile": prof, "processes": [
    {"name": "dendrite", "pid": int(mpid), "debug": dbg},
    {"name": "broker", "pid": int(bpid)},
    {"name": "postgres", "pid": int(pm), "kind": "postgres"}]}, open(path, "w"))
EOF
	run_scenario "$run" "http://127.0.0.1:$port"
	cleanup
}

# run_poly RUN_DIR: devcluster with one roomserver shard.
run_poly() {
	local run=$1 port dpid
	port=$(freeport)
	"$out/devcluster" --config "$out/config.yaml" --http-bind-address "127.0.0.1:$port" --roomserver-shards 1 \
		--dendrite "$out/dendrite" >"$run/devcluster.log" 2>&1 &
	dpid=$!
	pids+=("$dpid")
	wait_url "http://127.0.0.1:$port/_devcluster/status" "$dpid" "$run/devcluster.log"
	curl -sf "http://127.0.0.1:$port/_devcluster/status" >"$run/status.json"
	python3 - "$run/spec.json" "$run/status.json" "$dpid" "$profile" <<'EOF'
import json, sys
_, path, status, dpid, prof = sys.argv
st = json.load(open(status))
procs = [{"name": p["name"], "pid": p["pid"], "debug": p["internal"]} for p in st["processes"]]
procs.append({"name": "broker", "pid": st["broker"]["pid"]})
procs.append({"name": "proxy", "pid": int(dpid)})
# devcluster reports its PostgreSQL server's postmaster; the backends are its children.
procs.append({"name": "postgres", "pid": st["postgres"]["pid"], "kind": "postgres"})
json.dump({"profile": prof, "processes": procs}, open(path, "w"))
EOF
	run_scenario "$run" "http://127.0.0.1:$port"
	cleanup
}

# run_scenario RUN_DIR URL: mxbench send under cpu.py.
run_scenario() {
	local run=$1 url=$2
	set +e
	python3 "$out/cpu.py" "$run/spec.json" "$run" -- "$out/mxbench" -hs "$url" -scenario send -users "$users" -messages "$messages"
	set -e
}

printf 'mode\tround\tload_before\tload_after\tmsg_per_s\tok\tserver_cpu_ms_per_msg\tidle_cpu_per_s\twindow_s\tnet_ms_per_msg\tprocesses_ms_per_msg\n' >"$out/results.tsv"
for round in $(seq 1 "$rounds"); do
	for mode in mono poly; do
		run="$out/$mode-r$round"
		mkdir -p "$run"
		rm -rf "$out/data"
		"run_$mode" "$run"
		python3 - "$run" "$mode" "$round" >>"$out/results.tsv" <<'EOF'
import json, sys
run, mode, rnd = sys.argv[1:]
c = json.load(open(run + "/cpu.json"))
try:
    res = json.loads(open(run + "/mxbench.json").read().splitlines()[-1])
    m = res["metrics"]
    sent, rate, ok = m["sent"], "%.0f" % m["messages_per_s"], "ok" if res["ok"] else "PROBLEMS"
    if res.get("error"):
        ok = "ERROR"
except (IndexError, KeyError, ValueError):
    sent, rate, ok = 0, "-", "ERROR"
if c["restarted"]:
    ok = "RESTARTED:" + ",".join(c["restarted"])
per = {k: 1000 * v / max(sent, 1) for k, v in c["cpu_s"].items()}
per["mxbench"] = 1000 * c["mxbench_cpu_s"] / max(sent, 1)
server = sum(v for k, v in per.items() if k != "mxbench")
idle = sum(c["idle_cpu_per_s"].values())
net = server - 1000 * idle * c["window_s"] / max(sent, 1)
print("\t".join([mode, rnd, "/".join(c["load_before"]), "/".join(c["load_after"]), rate, ok, "%.3f" % server,
    "%.3f" % idle, "%.1f" % c["window_s"], "%.3f" % net, " ".join("%s=%.3f" % kv for kv in sorted(per.items()))]))
EOF
		tail -n 1 "$out/results.tsv"
	done
done
python3 - "$out/results.tsv" <<'EOF'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1]), delimiter="\t"))
# A run whose only problems are mxbench's live /sync falling behind (limited timelines, on an
# oversubscribed machine) still sent and measured every message: its CPU counts.
good = [r for r in rows if r["ok"] in ("ok", "PROBLEMS")]
rng = lambda xs: ("%.2f" % min(xs)) if "%.2f" % min(xs) == "%.2f" % max(xs) else "%.2f-%.2f" % (min(xs), max(xs))
per = {}
for r in good:
    for kv in r["processes_ms_per_msg"].split():
        k, v = kv.split("=")
        per.setdefault(k, {}).setdefault(r["mode"], []).append(float(v))
print("\nCPU ms per message (range over runs)")
print("%-18s %-14s %-14s" % ("process", "monolith", "polylith"))
for k in sorted(per, key=lambda k: (k == "mxbench", k)):
    print("%-18s %-14s %-14s" % (k, rng(per[k]["mono"]) if "mono" in per[k] else "-", rng(per[k]["poly"]) if "poly" in per[k] else "-"))
srv = {m: [float(r["server_cpu_ms_per_msg"]) for r in good if r["mode"] == m] for m in ("mono", "poly")}
idle = {m: [float(r["idle_cpu_per_s"]) for r in good if r["mode"] == m] for m in ("mono", "poly")}
net = {m: [float(r["net_ms_per_msg"]) for r in good if r["mode"] == m] for m in ("mono", "poly")}
win = {m: [float(r["window_s"]) for r in good if r["mode"] == m] for m in ("mono", "poly")}
if srv["mono"] and srv["poly"]:
    print("%-18s %-14s %-14s" % ("server total", rng(srv["mono"]), rng(srv["poly"])))
    print("%-18s %-14s %-14s" % ("idle CPU s/s", rng(idle["mono"]), rng(idle["poly"])))
    print("%-18s %-14s %-14s" % ("window s", rng(win["mono"]), rng(win["poly"])))
    print("%-18s %-14s %-14s" % ("total less idle", rng(net["mono"]), rng(net["poly"])))
    mean = lambda xs: sum(xs) / len(xs)
    print("polylith / monolith (means): %.2f (%.2f / %.2f ms per message); less the idle cost: %.2f (%.2f / %.2f)" % (
        mean(srv["poly"]) / mean(srv["mono"]), mean(srv["poly"]), mean(srv["mono"]),
        mean(net["poly"]) / mean(net["mono"]), mean(net["poly"]), mean(net["mono"])))
print("load averages: " + ", ".join(r["load_before"] for r in rows))
bad = [r for r in rows if r["ok"] != "ok"]
print("%d run(s) left out (ERROR or a process restarted)" % len([r for r in rows if r not in good]))
if bad:
    print("%d run(s) found problems or could not finish: see their mxbench.txt" % len(bad))
    sys.exit(1)
EOF
