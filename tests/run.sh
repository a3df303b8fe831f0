#!/usr/bin/env bash
# The whole test suite, as the README gives it: starts (or installs) the services, then runs every
# test of the workspace. Extra arguments go to `cargo test` (e.g. a filter).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/services.sh
exec cargo test --workspace --locked "$@"
