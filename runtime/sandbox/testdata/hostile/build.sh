#!/usr/bin/env bash
# Rebuilds every hostile test module: <name>.wat -> <name>.wasm with wabt's
# wat2wasm (Debian: apt-get install wabt; written against wabt 1.0.32). The
# output carries no names section and is byte-for-byte reproducible. CI runs:
#
#   runtime/sandbox/testdata/hostile/build.sh && git diff --exit-code runtime/sandbox/testdata/
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
command -v wat2wasm >/dev/null || { echo "build.sh: wat2wasm not found (apt-get install wabt)" >&2; exit 1; }

for wat in *.wat; do
	wasm="${wat%.wat}.wasm"
	wat2wasm "$wat" -o "$wasm"
	if command -v wasm-validate >/dev/null; then
		wasm-validate "$wasm"
	fi
	printf '%-18s %5d bytes\n' "$wasm" "$(wc -c <"$wasm")"
done
