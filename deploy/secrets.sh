#!/usr/bin/env bash
# Makes the compose deployment's Docker secrets, once: the broker's
# key-encryption key, 32 random bytes in base64, in deploy/secrets/kek (or
# $CONTRACTUAL_SECRETS/kek). An existing key is never replaced: losing it
# loses every stored secret, so back it up apart from the broker's volume.
#
# Compose bind-mounts a secret's file with the host file's owner and mode,
# and the broker reads it as UID 10005. So the file is readable by all
# (0444) and its directory by its owner alone (0700): on the host only the
# directory's owner (and root) can reach it; in the containers only the
# broker mounts it.
#
# Usage: deploy/secrets.sh
set -euo pipefail

dir=${CONTRACTUAL_SECRETS:-$(dirname "${BASH_SOURCE[0]}")/secrets}
mkdir -p "$dir"
chmod 0700 "$dir"
kek=$dir/kek
if [[ -e $kek ]]; then
	echo "$kek exists (kept)"
	exit 0
fi
(umask 0077 && head -c 32 /dev/urandom | base64 >"$kek.tmp")
chmod 0444 "$kek.tmp"
mv "$kek.tmp" "$kek"
echo "made $kek: back it up; without it the broker's secrets are lost"
