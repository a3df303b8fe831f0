#!/usr/bin/env bash
# The whole test suite, as the README gives it: starts (or installs) the services, then runs every
# test of the workspace, every binary even after one fails, and ends with one line counting the
# tests of all of them (`N passed, N failed`). Extra arguments go to `cargo test` (e.g. a filter).
# Exit status: cargo's (non-zero when anything failed or did not build).
set -euo pipefail
cd "$(dirname "$0")/.."
bash tests/services.sh
# One place for the suite's PostgreSQL (tests/services.sh's cluster); every test reads it.
export PASSERELLE_TEST_POSTGRES_URL=${PASSERELLE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:${PASSERELLE_TEST_POSTGRES_PORT:-5433}/postgres}
# A seed for the tests that draw their faults and kill points at random; printed by each such test
# (set it to replay a failure).
export PASSERELLE_TEST_SEED=${PASSERELLE_TEST_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
echo "tests: PASSERELLE_TEST_SEED=$PASSERELLE_TEST_SEED"

out=$(mktemp "${TMPDIR:-/tmp}/passerelle-tests.XXXXXX")
trap 'rm -f "$out"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast "$@" 2>&1 | tee "$out" || status=$?
# Every test binary ends with `test result: ok. 12 passed; 0 failed; …`.
awk '/^test result:/ {
       for (i = 1; i < NF; i++) {
         if ($(i + 1) ~ /^passed/) p += $i
         if ($(i + 1) ~ /^failed/) f += $i
       }
     }
     END { printf "%d passed, %d failed\n", p, f }' "$out"
exit "$status"
