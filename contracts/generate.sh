#!/usr/bin/env bash
# Lints contracts/proto, checks it for breaking changes, and regenerates
# contracts/gen from it.
#
# buf and the protoc plugins are Go tools pinned in tools.mod, so this needs
# only the Go toolchain. CI runs it and then `git diff --exit-code` to catch
# generated code that was not regenerated (or was edited by hand).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

buf() { go tool -modfile=tools.mod buf "$@"; }

buf format --diff --exit-code
buf lint
# contractual.v1 is stable: no change may break a client of the schema in
# contracts/v1-baseline.binpb (the services as split into device-facing and
# service-only ones). Regenerate that baseline only for a new version:
#   go tool -modfile=tools.mod buf build -o contracts/v1-baseline.binpb
buf breaking --against contracts/v1-baseline.binpb
buf generate
