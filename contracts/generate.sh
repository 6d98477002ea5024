#!/usr/bin/env bash
# Lints contracts/proto and regenerates contracts/gen from it.
#
# buf and the protoc plugins are Go tools pinned in tools.mod, so this needs
# only the Go toolchain. CI runs it and then `git diff --exit-code` to catch
# generated code that was not regenerated (or was edited by hand).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

buf() { go tool -modfile=tools.mod buf "$@"; }

buf format --diff --exit-code
buf lint
buf generate
