#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a set time (default 60 s each), from
# seeds written by the project's own encoders, in an optimised build that
# keeps debug assertions and overflow checks (an overflow that would wrap in
# a release build fails at once, not later as a hang or a wrong answer). A
# crash, a hang (an input running over 10 s), or memory over 2 GiB (RSS) or a
# single allocation over 1 GiB fails the run; the input that did it is kept in
# fuzz/artifacts/<target>/.
#
#   bash scripts/fuzz.sh            # 60 s per target
#   bash scripts/fuzz.sh 600 wal    # one target, 10 minutes
#   FUZZ_SEED=1 bash scripts/fuzz.sh 10   # CI: the same mutations every run
#
# Without FUZZ_SEED each run explores from a new random seed: that is how
# new bugs are found, by long runs. CI gives a fixed seed so that its verdict
# on a commit does not depend on luck: it replays every kept input and the
# same short exploration each time.
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). libFuzzer's
# instrumentation needs nightly compiler flags; RUSTC_BOOTSTRAP=1 allows them
# on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(remote_write otlp text_exposition chunk block wal promql)
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --quiet
export RUSTC_BOOTSTRAP=1
# The seeds are written by a build in the test profile, which the test run
# before this one has mostly built already (a release build of the workspace
# for them took minutes of CI's time).
cargo run --profile test --quiet -p sextant-benches --bin fuzz_seeds -- fuzz/corpus
(cd fuzz && cargo fuzz build -O -a)
fail=0
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  # Inputs that once crashed or exhausted memory are run again every time.
  for f in testdata/fuzz/"$t"/*; do
    if [ -f "$f" ]; then cp "$f" "fuzz/corpus/$t/"; fi
  done
  log="fuzz/artifacts/$t/run.log"
  start=$(date +%s)
  if (cd fuzz && cargo fuzz run -O -a "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=1024 \
        -print_final_stats=1 ${FUZZ_SEED:+-seed="$FUZZ_SEED"} >"artifacts/$t/run.log" 2>&1); then
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo "?")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*' || echo "?")
    echo "fuzz $t: ok, $runs inputs in $(( $(date +%s) - start )) s, coverage $cov edges"
  else
    echo "fuzz $t: FAILED (log: $log)"
    grep -E "ERROR|panicked|SUMMARY|Test unit written" "$log" | head -20 || true
    fail=1
  fi
done
exit $fail
