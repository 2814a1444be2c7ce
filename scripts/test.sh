#!/usr/bin/env bash
# The project's test command (see README): every crate's unit and integration
# tests, then the PromQL conformance suite again with its per-file counts shown.
set -euo pipefail
cd "$(dirname "$0")/.."
export SEXTANT_PROMQL_TESTDATA="${SEXTANT_PROMQL_TESTDATA:-$(pwd)/../shared/conformance/promql}"
cargo test --workspace
echo "== PromQL conformance (Prometheus's test scripts; gaps listed in testdata/promql/known-failures.txt)"
cargo test --workspace --test conformance -- --nocapture --quiet
