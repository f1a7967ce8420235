#!/usr/bin/env bash
# Compare `trueup build DIR` with `kubectl kustomize DIR`: median wall time over a few runs,
# peak memory (max RSS), and whether the outputs are byte-identical.
#
# Usage: scripts/compare-kustomize.sh [DIR] [RUNS]
#   DIR   a kustomization directory; when omitted, the benchmark's large overlay tree is
#         generated into a temporary directory (size knobs: TRUEUP_BENCH_BASES,
#         TRUEUP_BENCH_PER_BASE, TRUEUP_BENCH_OVERLAYS, see benches/render.rs). With
#         TRUEUP_BENCH_TREE=heavy it is the heavy tree instead, shaped like the largest real
#         trees (~10 MB of YAML out: CRD bundles with deep schemas and long descriptions,
#         long embedded configs, overlays sharing bases; knobs TRUEUP_BENCH_CRDS,
#         TRUEUP_BENCH_APPS, TRUEUP_BENCH_OVERLAYS).
#   RUNS  runs per tool (default 5).
#
# Needs kubectl and GNU time (`/usr/bin/time`, Debian package `time`). trueup is the release
# build of the example CLI (`cargo build --release --example trueup`); if that binary does
# not have a `build` subcommand yet, the benchmark binary's render mode is used instead (it
# calls the same `render_to_yaml`).
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
RUNS=${2:-5}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}

command -v kubectl >/dev/null || { echo "kubectl not found" >&2; exit 2; }
[ -x /usr/bin/time ] || { echo "/usr/bin/time not found (apt-get install time)" >&2; exit 2; }

bench_bin() {
    cargo bench --bench render --no-run --message-format=json 2>/dev/null |
        sed -n 's/.*"executable":"\([^"]*render-[^"]*\)".*/\1/p' | tail -1
}

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

if [ $# -ge 1 ] && [ -n "$1" ]; then
    DIR=$(cd "$1" && pwd)
else
    DIR=$TMP/tree
    BENCH=$(bench_bin)
    n=$(TRUEUP_BENCH_GENERATE="$DIR" "$BENCH")
    echo "generated tree: $DIR ($n objects, $(du -sh "$DIR" | cut -f1) of YAML)"
fi

# Pick the trueup command.
cargo build --release --example trueup >/dev/null 2>&1 || true
TRUEUP_BIN=$TARGET/release/examples/trueup
if [ -x "$TRUEUP_BIN" ] && "$TRUEUP_BIN" build "$DIR" >/dev/null 2>&1; then
    TRUEUP=("$TRUEUP_BIN" build "$DIR")
else
    BENCH=${BENCH:-$(bench_bin)}
    echo "note: '$TRUEUP_BIN build' unavailable, using the bench binary's render mode"
    TRUEUP=(env "TRUEUP_BENCH_RENDER=$DIR" "$BENCH")
fi

# run LABEL CMD... : prints "seconds maxrss_kb" per run into $TMP/LABEL.times
run() {
    local label=$1
    shift
    : >"$TMP/$label.times"
    for _ in $(seq "$RUNS"); do
        /usr/bin/time -f "%e %M" -o "$TMP/$label.t" "$@" >"$TMP/$label.out" 2>"$TMP/$label.err" || {
            echo "$label failed:" >&2
            cat "$TMP/$label.err" >&2
            exit 1
        }
        cat "$TMP/$label.t" >>"$TMP/$label.times"
    done
}

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

run trueup "${TRUEUP[@]}"
run kubectl kubectl kustomize "$DIR"

t_ours=$(cut -d' ' -f1 "$TMP/trueup.times" | median)
t_theirs=$(cut -d' ' -f1 "$TMP/kubectl.times" | median)
m_ours=$(cut -d' ' -f2 "$TMP/trueup.times" | sort -n | tail -1)
m_theirs=$(cut -d' ' -f2 "$TMP/kubectl.times" | sort -n | tail -1)

printf '%-10s %12s %14s\n' tool "median s" "peak RSS MiB"
printf '%-10s %12s %14s\n' trueup "$t_ours" "$(awk "BEGIN{printf \"%.1f\", $m_ours/1024}")"
printf '%-10s %12s %14s\n' kubectl "$t_theirs" "$(awk "BEGIN{printf \"%.1f\", $m_theirs/1024}")"
awk "BEGIN{ o=$t_ours; if (o < 0.005) o = 0.005; printf \"speed-up: %.1fx (median wall time; times under 10 ms are rounded up)\n\", $t_theirs/o }"
awk "BEGIN{ printf \"memory: trueup uses %.2fx the peak RSS of kubectl\n\", $m_ours/$m_theirs }"
if cmp -s "$TMP/trueup.out" "$TMP/kubectl.out"; then
    echo "output: byte-identical ($(wc -c <"$TMP/kubectl.out") bytes)"
else
    echo "output: DIFFERS (diff $TMP/kubectl.out $TMP/trueup.out)"
    diff "$TMP/kubectl.out" "$TMP/trueup.out" | head -20 || true
fi
