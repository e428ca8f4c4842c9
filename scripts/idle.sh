# shellcheck shell=bash
# Sourced by scripts/soak.sh and scripts/grownab.sh: a free loopback port, and waiting until a server is idle.

# freeport prints a TCP port on 127.0.0.1 that nothing listens on.
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# tree_ticks prints the CPU ticks (user + system) of the processes $@ and all their descendants. A process
# that ends between the glob and cat is skipped, not an error (which would end a script under set -e).
tree_ticks() {
	{ cat /proc/[0-9]*/stat 2>/dev/null || true; } | awk -v roots="$*" '{ppid[$1] = $4; t[$1] = $14 + $15}
		END {split(roots, r, " "); for (i in r) root[r[i]] = 1
			n = 0; for (p in t) {q = p; while (q != "" && !(q in root) && q > 1) q = ppid[q]; if (q in root) n += t[p]} print n}'
}

# wait_idle waits until the processes $@ with their descendants use under a tenth of a core over half a
# second, and returns 1 if they did not within two minutes.
wait_idle() {
	local hz before after
	hz=$(getconf CLK_TCK)
	for _ in $(seq 240); do
		before=$(tree_ticks "$@")
		sleep 0.5
		after=$(tree_ticks "$@")
		[ $((after - before)) -ge $((hz / 20)) ] || return 0
	done
	return 1
}
