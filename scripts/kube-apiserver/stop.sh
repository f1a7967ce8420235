#!/usr/bin/env bash
# Stops exactly the processes one start.sh run started (PIDs in RUN_DIR/*.pid), after checking
# each PID still runs the expected binary. Never kills anything by name.
#
# Usage: stop.sh RUN_DIR [--clean]     (--clean also removes RUN_DIR)
set -uo pipefail
RUN=${1:?usage: stop.sh RUN_DIR [--clean]}
CLEAN=0
[[ ${2:-} == --clean ]] && CLEAN=1
for name in kube-controller-manager kube-apiserver etcd; do
  f=$RUN/$name.pid
  [[ -f $f ]] || continue
  pid=$(<"$f")
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null || true); exe=${exe% (deleted)}
  if [[ -n $pid && -d /proc/$pid && $exe == *"/$name" ]]; then
    echo "[stop] $name (pid $pid)" >&2
    kill -TERM "$pid" 2>/dev/null
    for _ in $(seq 1 40); do [[ -d /proc/$pid ]] || break; sleep 0.25; done
    if [[ -d /proc/$pid ]]; then echo "[stop] $name did not exit, SIGKILL $pid" >&2; kill -KILL "$pid" 2>/dev/null; fi
  else
    echo "[stop] $name: pid ${pid:-?} not running (or not ours), skipping" >&2
  fi
  rm -f "$f"
done
# Only a directory start.sh made (it has a pki/ and no PID files left) is removed.
if (( CLEAN )) && [[ -d $RUN/pki ]] && ! compgen -G "$RUN/*.pid" >/dev/null; then
  rm -rf "$RUN"
fi
