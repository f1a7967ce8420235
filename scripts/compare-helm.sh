#!/usr/bin/env bash
# Compares trueup's in-process `helm template` (crates/gotmpl/examples/helm-template.rs)
# with real `helm template` on the same chart: checks the outputs are identical, then runs
# each N times and prints the median wall time (process start included), the ratio and the
# peak RSS (/usr/bin/time %M).
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

# Prints "median_seconds peak_rss_kb" for RUNS runs of the given command.
measure() {
  local times=() rss=0 t0 t1 m tf
  tf=$(mktemp)
  for _ in $(seq "$RUNS"); do
    t0=$(date +%s%N)
    /usr/bin/time -o "$tf" -f "%M" "$@" >/dev/null 2>&1 || true
    t1=$(date +%s%N)
    times+=( $(( t1 - t0 )) )
    m=$(tail -1 "$tf")
    (( m > rss )) && rss=$m
  done
  rm -f "$tf"
  local med
  med=$(printf '%s\n' "${times[@]}" | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
  echo "$med $rss"
}

read -r h_ns h_rss < <(measure "$HELM" template bench "$CHART" "${EXTRA[@]}")
read -r o_ns o_rss < <(measure "$OURS" bench "$CHART" "${EXTRA[@]}")
awk -v h="$h_ns" -v o="$o_ns" -v hr="$h_rss" -v orss="$o_rss" -v chart="$CHART" -v runs="$RUNS" 'BEGIN {
  printf "chart: %s (%d runs each, median wall time incl. process start)\n", chart, runs
  printf "helm template : %8.1f ms  peak RSS %7d KB\n", h/1e6, hr
  printf "trueup        : %8.1f ms  peak RSS %7d KB\n", o/1e6, orss
  printf "ratio         : %.1fx faster, %.1fx less memory\n", h/o, hr/orss
}'
