#!/usr/bin/env bash
# Set up and run every test of the repository on a Debian 12 machine, as CI does (.ci/run calls this script).
#
#   ./test.sh            install what is missing, then `go test ./...`, then sytest against the monolith
#   ./test.sh go         only the Go tests (everything `go test ./...` runs, the server-starting packages
#                        one after the other, then the goolm-tagged crypto test)
#   ./test.sh sytest     only sytest (after `go build`), failing when a test of sytest-whitelist does not pass
#
# Installs with apt-get (as root, or through sudo) what is missing: PostgreSQL's binaries (the Go tests start a
# throwaway cluster from them) and the Perl packages sytest needs (../shared/sytest/README.md lists them).
# Sytest is not part of the repository: it is looked for in ../shared/sytest beside the repository (override
# with SYTEST_DIR). Its results go to sytest-out/ (override with SYTEST_OUT): results.tap, sytest.log,
# summary.md and each server's log under work/. `scripts/conformance.sh sytest-out` turns them into
# docs/conformance.md.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$root"
what=${1:-all}
case "$what" in
all | go | sytest) ;;
*)
	echo "usage: $0 [all|go|sytest]" >&2
	exit 2
	;;
esac

sytest_dir=${SYTEST_DIR:-$root/../shared/sytest}
sytest_out=${SYTEST_OUT:-$root/sytest-out}

# The Debian packages sytest's Perl code uses (../shared/sytest/README.md).
sytest_packages=(libclass-method-modifiers-perl libdata-dump-perl libdbi-perl libdbd-pg-perl
	libdigest-hmac-perl libemail-address-xs-perl libemail-mime-perl libfile-slurper-perl
	libfuture-perl libhttp-message-perl libio-async-perl libio-async-ssl-perl
	libio-socket-ip-perl libio-socket-ssl-perl libjson-perl libjson-xs-perl liblist-utilsby-perl
	libmodule-pluggable-perl libnet-async-http-perl libnet-ssleay-perl libstruct-dumb-perl
	liburi-perl libyaml-libyaml-perl libcryptx-perl openssl perl python3)

# apt_install installs the Debian packages given that are not installed yet.
apt_install() {
	local missing=() p
	for p in "$@"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
	done
	[ ${#missing[@]} -eq 0 ] && return 0
	local sudo=()
	if [ "$(id -u)" -ne 0 ]; then
		command -v sudo >/dev/null 2>&1 || {
			echo "test.sh: missing packages ${missing[*]}; install them as root: apt-get install ${missing[*]}" >&2
			exit 1
		}
		sudo=(sudo)
	fi
	echo "test.sh: installing ${missing[*]}"
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq
	"${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

run_go() {
	if ! command -v initdb >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
		apt_install postgresql
	fi
	go version
	# The packages that start whole servers (monoliths, the polylith's processes) run one after
	# the other, after the rest: run side by side on two cores they starved each other's
	# servers past the tests' deadlines.
	go test $(go list ./... | grep -v -e '/cmd/dendrite$' -e '/cmd/devcluster$') -count=1 -timeout 20m
	go test -p 1 ./cmd/dendrite ./cmd/devcluster -count=1 -timeout 20m
	# The end-to-end encryption test needs mautrix's pure-Go crypto (build tag goolm; without
	# it mautrix wants libolm through cgo).
	go test -tags goolm ./internal/setup/ -count=1 -run TestEncryptedMessages
}

run_sytest() {
	if [ ! -x "$sytest_dir/run.sh" ]; then
		echo "test.sh: sytest not found: expected $sytest_dir/run.sh (the shared sytest folder beside the" \
			"repository, ../shared/sytest; or set SYTEST_DIR)" >&2
		exit 1
	fi
	apt_install "${sytest_packages[@]}"
	mkdir -p "$sytest_out/bin"
	go build -o "$sytest_out/bin/dendrite" ./cmd/dendrite
	local rc=0
	# URL previews are off by default; sytest's "Test URL preview" needs them (its page server is on loopback,
	# which the driver's global.deny_networks: [] allows).
	DENDRITE_MEDIA_API_URL_PREVIEW_ENABLED=true \
		"$sytest_dir/run.sh" --bin "$sytest_out/bin/dendrite" --out "$sytest_out" --whitelist "$root/sytest-whitelist" || rc=$?
	# The are-we-synapse-yet percentages, e.g. "### Client-Server APIs: project 46% (280/607), ...".
	grep -E '^### (Client-Server APIs|Server-Server \(Federation\) APIs):' "$sytest_out/summary.md" | sed 's/^### /are-we-synapse-yet: /' || true
	if [ "$rc" -ne 0 ] && [ -s "$sytest_out/whitelist-missing.txt" ]; then
		echo "whitelisted sytests that did not pass, with sytest's reason ($sytest_out/lists/failed-reasons.txt):" >&2
		sed -E 's/ \([0-9]+ subtests\)$//' "$sytest_out/whitelist-missing.txt" |
			awk 'NR == FNR { want[$0] = 1; next }
				/^[^ ]/ { name = $0; sub(/ \[[^]]*\]( \(Dendrite whitelist\))?$/, "", name); show = (name in want) }
				show' - "$sytest_out/lists/failed-reasons.txt" >&2
		retry_sytest && rc=0
	fi
	return "$rc"
}

# retry_sytest runs once more, alone, the files of the few whitelisted sytests that did not pass in the
# whole suite, and succeeds when every one of them passes there. Sytest's tests share one run's servers and
# its one fake push gateway and federation server, and wait on fixed deadlines: on two loaded cores a test
# now and then misses one. A test that fails twice fails the run; so do more than 20 at once (that is
# a regression, not load). The retry's results are in sytest-out/retry.
retry_sytest() {
	local missing files
	missing=$(wc -l <"$sytest_out/whitelist-missing.txt")
	if [ "$missing" -gt 20 ]; then
		echo "sytest: $missing whitelisted tests did not pass; not retrying more than 20" >&2
		return 1
	fi
	files=$(python3 "$root/scripts/sytest-files.py" "$sytest_dir/sytest/tests" <"$sytest_out/whitelist-missing.txt") || return 1
	echo "sytest: retrying once, alone, the files of the $missing whitelisted tests that did not pass:" $files >&2
	# shellcheck disable=SC2086 # one argument per file
	"$sytest_dir/run.sh" --bin "$sytest_out/bin/dendrite" --out "$sytest_out/retry" \
		--whitelist "$sytest_out/whitelist-missing.txt" -- $files || return 1
	echo "sytest: every whitelisted test passed on its retry (flaky under load in the whole suite):" >&2
	cat "$sytest_out/whitelist-missing.txt" >&2
}

if [ "$what" = all ] || [ "$what" = go ]; then
	run_go
fi
if [ "$what" = all ] || [ "$what" = sytest ]; then
	run_sytest
fi
