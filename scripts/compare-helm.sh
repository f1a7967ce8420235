#!/usr/bin/env bash
# Compares trueup's in-process `helm template` (crates/gotmpl/examples/helm-template.rs)
# with real `helm template` on the same chart: checks the outputs are identical, then runs
# each N times in turn and prints the median wall time (process start included), the ratio
# (of the medians, and the median of the run-by-run ratios) and the peak RSS
# (/usr/bin/time %M, from separate runs).
#
#   scripts/compare-helm.sh [CHART_DIR] [RUNS] [-- extra helm template args]
#
# Helm comes from $TRUEUP_HELM or /work/tools/helm/helm
# (crates/gotmpl/scripts/install-helm.sh DEST installs it).
set -euo pipefail
cd "$(dirname "$0")/.."
CHART=${1:-crates/gotmpl/tests/charts/operator}
RUNS=${2:-15}
shift $(( $# > 2 ? 2 : $# )) || true
[ "${1:-}" = "--" ] && shift
EXTRA=("$@")
HELM=${TRUEUP_HELM:-/work/tools/helm/helm}
[ -x "$HELM" ] || { echo "no helm at $HELM (set TRUEUP_HELM)" >&2; exit 2; }
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build -q --release -p trueup-gotmpl --example helm-template
OURS="$CARGO_TARGET_DIR/release/examples/helm-template"

if ! diff <("$HELM" template bench "$CHART" "${EXTRA[@]}" 2>&1) <("$OURS" bench "$CHART" "${EXTRA[@]}" 2>&1) >/dev/null; then
  echo "WARNING: outputs differ for $CHART" >&2
fi

# Wall time of one run in nanoseconds, read from bash's own clock: forking
# `date` around the run, or wrapping it in /usr/bin/time, would add a few
# milliseconds of the measurement's own to every run (as much as the fast
# side takes in all).
wall_ns() {
  local t0 t1
  t0=$EPOCHREALTIME
  "$@" >/dev/null 2>&1 || true
  t1=$EPOCHREALTIME
  echo $(( (${t1/[.,]/} - ${t0/[.,]/}) * 1000 ))
}

# Peak RSS (KB) over a few separate runs under /usr/bin/time.
peak_rss() {
  local rss=0 m tf
  tf=$(mktemp)
  for _ in 1 2 3; do
    /usr/bin/time -o "$tf" -f "%M" "$@" >/dev/null 2>&1 || true
    m=$(tail -1 "$tf")
    (( m > rss )) && rss=$m
  done
  rm -f "$tf"
  echo "$rss"
}

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# The two commands run in turn (helm, ours, helm, ours, ...) so that a
# change in the machine's load hits both sides alike.
h_times=() o_times=() ratios=()
for _ in $(seq "$RUNS"); do
  h=$(wall_ns "$HELM" template bench "$CHART" "${EXTRA[@]}")
  o=$(wall_ns "$OURS" bench "$CHART" "${EXTRA[@]}")
  h_times+=( "$h" ) o_times+=( "$o" )
  ratios+=( "$(awk -v h="$h" -v o="$o" 'BEGIN {printf "%.4f", h/o}')" )
done
h_ns=$(printf '%s\n' "${h_times[@]}" | median)
o_ns=$(printf '%s\n' "${o_times[@]}" | median)
pair=$(printf '%s\n' "${ratios[@]}" | median)
h_rss=$(peak_rss "$HELM" template bench "$CHART" "${EXTRA[@]}")
o_rss=$(peak_rss "$OURS" bench "$CHART" "${EXTRA[@]}")
awk -v h="$h_ns" -v o="$o_ns" -v p="$pair" -v hr="$h_rss" -v orss="$o_rss" -v chart="$CHART" -v runs="$RUNS" 'BEGIN {
  printf "chart: %s (%d runs each, in turn, median wall time incl. process start)\n", chart, runs
  printf "helm template : %8.1f ms  peak RSS %7d KB\n", h/1e6, hr
  printf "trueup        : %8.1f ms  peak RSS %7d KB\n", o/1e6, orss
  printf "ratio         : %.1fx faster (median of paired runs: %.1fx), %.1fx less memory\n", h/o, p, hr/orss
}'
