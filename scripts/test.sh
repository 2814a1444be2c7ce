#!/usr/bin/env bash
# The project's test command (see README): every crate's unit and integration
# tests, including the PromQL conformance suite.
set -euo pipefail
cd "$(dirname "$0")/.."
export SEXTANT_PROMQL_TESTDATA="${SEXTANT_PROMQL_TESTDATA:-$(pwd)/../shared/conformance/promql}"
cargo test --workspace --quiet 2>&1 | tee /tmp/sextant-test.log
