#!/usr/bin/env bash
# Side-by-side benchmark: the same inference-fleet remote-write requests into
# Sextant, Prometheus and VictoriaMetrics, one after the other on this machine;
# ingest CPU and rate, peak RSS, bytes on disk, dashboard query latency, and
# whether Sextant's answers equal Prometheus's. Prints a Markdown report.
#
#   bash benches/peers/run.sh                         # 139,520 series, 2 h
#   bash benches/peers/run.sh --series 20000 --hours 6 --runs 5
#
# Needs the Debian packages prometheus and victoria-metrics.
set -euo pipefail
cd "$(dirname "$0")/../.."
for bin in prometheus victoria-metrics; do
  command -v "$bin" >/dev/null || { echo "missing $bin (apt-get install prometheus victoria-metrics)" >&2; exit 1; }
done
cargo build --release --quiet -p sextant -p sextant-benches
echo "Machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "Versions: $(prometheus --version 2>&1 | head -1); $(victoria-metrics -version 2>&1 | head -1)"
echo "Command: bash benches/peers/run.sh $*"
echo
exec target/release/peers --sextant target/release/sextant "$@"
