#!/usr/bin/env bash
# Rebuilds wasmbin's test modules, features.wat -> features.wasm (with a
# name section) and the env module it imports, env.wat -> env.wasm, with
# wabt's wat2wasm (Debian: apt-get install wabt; written against wabt
# 1.0.32). CI runs:
#
#   runtime/wasmbin/testdata/build.sh && git diff --exit-code runtime/wasmbin/testdata/
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
command -v wat2wasm >/dev/null || { echo "build.sh: wat2wasm not found (apt-get install wabt)" >&2; exit 1; }
wat2wasm --debug-names features.wat -o features.wasm
wat2wasm env.wat -o env.wasm
