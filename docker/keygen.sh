#!/bin/sh
# keygen.sh FILE: writes a Matrix ed25519 signing key (PEM "MATRIX PRIVATE KEY" block
# holding a random 32-byte seed, with a random Key-ID header) unless FILE exists. Every
# polylith process must sign with the same key, so it is made once and shared.
# Needs only a POSIX shell, head, tr and base64 (busybox will do).
set -eu
key=${1:?usage: keygen.sh FILE}
if [ -s "$key" ]; then
	echo "keygen: $key exists, keeping it"
	exit 0
fi
umask 077
mkdir -p "$(dirname "$key")"
id=$(LC_ALL=C tr -dc 'A-Za-z0-9' </dev/urandom | head -c 6)
seed=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
tmp="$key.tmp.$$"
{
	echo "-----BEGIN MATRIX PRIVATE KEY-----"
	echo "Key-ID: ed25519:$id"
	echo
	echo "$seed"
	echo "-----END MATRIX PRIVATE KEY-----"
} >"$tmp"
# The Dendrite image runs as nonroot (65532); KEY_OWNER overrides that (or is empty to skip).
owner=${KEY_OWNER-65532:65532}
if [ -n "$owner" ]; then
	chown "$owner" "$tmp"
fi
chmod 0400 "$tmp"
mv "$tmp" "$key"
echo "keygen: wrote $key (ed25519:$id)"
