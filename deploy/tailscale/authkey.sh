#!/usr/bin/env bash
# Writes the Tailscale sidecar's auth key (compose profile tailnet), read
# from standard input, into deploy/secrets/tailscale-authkey (or
# $CONTRACTUAL_SECRETS/tailscale-authkey), the file of the compose secret
# tailscale-authkey. The key is never on a command line, in the compose
# file or in an environment variable.
#
#   deploy/tailscale/authkey.sh             (paste the key; it is not echoed)
#   deploy/tailscale/authkey.sh < keyfile
#
# Make the key in the Tailscale admin console (Settings → Keys → Generate
# auth key; tag it, e.g. tag:contractual). The sidecar uses it only for its
# first login (TS_AUTH_ONCE), so a one-off key will do; this replaces a key
# written before.
#
# As for deploy/secrets.sh: compose bind-mounts the file with the host
# file's owner and mode, and the sidecar reads it as UID 10010, so the
# file is readable by all (0444) and its directory by its owner alone
# (0700).
#
# Usage: deploy/tailscale/authkey.sh
set -euo pipefail

dir=${CONTRACTUAL_SECRETS:-$(dirname "${BASH_SOURCE[0]}")/../secrets}
file=$dir/tailscale-authkey

if [[ -t 0 ]]; then
	printf 'Tailscale auth key: ' >&2
	IFS= read -r -s key || true
	echo >&2
else
	IFS= read -r key || true
fi
# Tailscale's keys are tskey-auth-…; Headscale's are hex.
if [[ ! $key =~ ^[A-Za-z0-9_-]{16,}$ ]]; then
	echo "deploy/tailscale/authkey.sh: not an auth key (one line: tskey-auth-... from Tailscale, or a Headscale pre-auth key)" >&2
	exit 1
fi

mkdir -p "$dir"
chmod 0700 "$dir"
(umask 0077 && printf '%s\n' "$key" >"$file.tmp")
chmod 0444 "$file.tmp"
mv -f "$file.tmp" "$file"
echo "wrote $file"
