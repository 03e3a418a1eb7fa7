#!/usr/bin/env bash
# Benchmark the last N commits of main with asv and publish the HTML dashboard.
#
#   bash benchmarks/asv_history.sh [N] [asv run options...]
#
# N (default 3): how many commits, main~N..main (each one is built from a clean checkout into
# its own wheel: ~1-3 minutes of C++ per commit on 2 cores; results of commits already measured
# on this machine are kept and skipped). The asv run options default to a small subset in quick
# mode (one sample per benchmark, so a step smaller than ~1.5x is noise there); pass your own to
# choose, e.g. `-b '^bench_query' -a repeat=5` or `--quick -b Counters`.
# Output: asv_benchmarks/.asv/results (the measurements, per machine and commit) and
# asv_benchmarks/.asv/html (the dashboard: `cd asv_benchmarks && asv preview`, or any static
# server over that folder). docs/maintainers.md explains the workflow.
set -euo pipefail
cd "$(dirname "$0")/../asv_benchmarks"
n=${1:-3}
[[ $# -gt 0 ]] && shift
if [[ ! "$n" =~ ^[1-9][0-9]*$ ]]; then
    echo "usage: $0 [N >= 1] [asv run options...]" >&2
    exit 2
fi
if [[ $# -eq 0 ]]; then
    set -- --quick -b '^bench_query\.Report\.time_count' -b '^bench_track\.PerIndex'
fi
# main may have fewer than N commits: benchmark what exists
total=$(git rev-list --count main)
(( n > total )) && n=$total
asv machine --yes >/dev/null
start=$(date +%s)
if (( n == total )); then range=main; else range="main~${n}..main"; fi
echo "== asv run ${range} $*"
asv run "$range" --skip-existing-commits --show-stderr "$@"
asv publish
echo "== done in $(( $(date +%s) - start )) s; dashboard: $(pwd)/.asv/html/index.html (asv preview serves it)"
