#!/usr/bin/env bash
# Starts etcd + a real kube-apiserver v1.20.2 (built by setup.sh) and, unless
# TRUEUP_KUBE_CONTROLLER_MANAGER=0, kube-controller-manager, on 127.0.0.1 only, in the
# background. Everything of one run (PKI, etcd data, logs, PID files, kubeconfig) lives in one
# run directory, so several runs can coexist and stop.sh stops exactly one of them.
#
# Usage: start.sh [RUN_DIR]      (default: a new mktemp -d directory)
# Prints on stdout, last line: the run directory. The kubeconfig is RUN_DIR/kubeconfig.
#
# Env (all optional):
#   TRUEUP_KUBE_CACHE                where setup.sh put bin/ (default $HOME/.cache/trueup-tools/kube-v1.20)
#   TRUEUP_KUBE_API_PORT             apiserver port (default: a free port)
#   TRUEUP_KUBE_ETCD_PORT            etcd client port (default: a free port); peer port likewise
#   TRUEUP_KUBE_ETCD_PEER_PORT
#   TRUEUP_KUBE_KCM_PORT             controller-manager secure port (default: a free port)
#   TRUEUP_KUBE_CONTROLLER_MANAGER   1 (default) or 0: without it nothing rewrites the status
#                                    of Deployments/Jobs, which tests set themselves
set -euo pipefail

CACHE=${TRUEUP_KUBE_CACHE:-$HOME/.cache/trueup-tools/kube-v1.20}
BIN=$CACHE/bin
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
WITH_KCM=${TRUEUP_KUBE_CONTROLLER_MANAGER:-1}
RUN=${1:-}
if [[ -z $RUN ]]; then RUN=$(mktemp -d "${TMPDIR:-/tmp}/trueup-kube.XXXXXX"); fi
mkdir -p "$RUN"
RUN=$(cd "$RUN" && pwd)
PKI=$RUN/pki

log() { echo "[start] $*" >&2; }
die() { log "ERROR: $*"; log "stopping what this run started"; "$HERE/stop.sh" "$RUN" || true; exit 1; }

[[ -x $BIN/kube-apiserver ]] || { log "ERROR: $BIN/kube-apiserver missing: run $HERE/setup.sh first"; exit 3; }
command -v etcd >/dev/null || { log "ERROR: etcd missing: run $HERE/setup.sh first"; exit 3; }
if [[ $WITH_KCM == 1 && ! -x $BIN/kube-controller-manager ]]; then
  log "no $BIN/kube-controller-manager: starting without it"; WITH_KCM=0
fi
if compgen -G "$RUN/*.pid" >/dev/null; then
  die "$RUN already has PID files: stop that run first ($HERE/stop.sh $RUN)"
fi

# A start can fail for reasons a second try fixes: a free port taken by someone else between
# our check and the bind, or etcd/the apiserver slow to come up on a loaded machine. Each
# attempt runs this script again in the same run directory (emptied, with new ports, after
# the failed attempt stopped what it started); missing binaries (exit 3) are not retried.
if [[ -z ${TRUEUP_KUBE_START_ATTEMPT:-} ]]; then
  for attempt in 1 2 3; do
    rc=0
    TRUEUP_KUBE_START_ATTEMPT=$attempt "${BASH_SOURCE[0]}" "$RUN" || rc=$?
    (( rc == 0 )) && exit 0
    (( rc == 3 )) && exit 3
    [[ -n ${TRUEUP_KUBE_API_PORT:-}${TRUEUP_KUBE_ETCD_PORT:-} ]] && exit "$rc"
    log "attempt $attempt failed (exit $rc)"
    (( attempt < 3 )) && { find "$RUN" -mindepth 1 -delete; log "retrying with fresh ports"; }
  done
  exit 1
fi

port_busy() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }
TAKEN=" "
free_port() { # a port nothing listens on and this run has not taken yet
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    [[ $TAKEN == *" $p "* ]] && continue
    port_busy "$p" && continue
    TAKEN+="$p "; echo "$p"; return 0
  done
  return 1
}
API_PORT=${TRUEUP_KUBE_API_PORT:-$(free_port)}; TAKEN+="$API_PORT "
ETCD_PORT=${TRUEUP_KUBE_ETCD_PORT:-$(free_port)}; TAKEN+="$ETCD_PORT "
ETCD_PEER_PORT=${TRUEUP_KUBE_ETCD_PEER_PORT:-$(free_port)}; TAKEN+="$ETCD_PEER_PORT "
KCM_PORT=${TRUEUP_KUBE_KCM_PORT:-$(free_port)}
for p in "$API_PORT" "$ETCD_PORT" "$ETCD_PEER_PORT"; do
  port_busy "$p" && die "port 127.0.0.1:$p is already in use"
done

# ---------- credentials (per run: a CA, a serving cert, SA keys, bearer tokens) ----------
mkdir -p "$PKI"
(
  cd "$PKI"
  umask 077
  openssl req -x509 -newkey rsa:2048 -nodes -days 365 -keyout ca.key -out ca.crt \
    -subj "/CN=trueup-test-ca" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
  openssl req -newkey rsa:2048 -nodes -keyout apiserver.key -out apiserver.csr -subj "/CN=kube-apiserver" 2>/dev/null
  cat > apiserver.ext <<EXT
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local
EXT
  openssl x509 -req -in apiserver.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 365 \
    -extfile apiserver.ext -out apiserver.crt 2>/dev/null
  openssl genrsa -out sa.key 2048 2>/dev/null
  openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  admin_token=$(openssl rand -hex 24)
  kcm_token=$(openssl rand -hex 24)
  printf '%s,kube-admin,kube-admin,"system:masters"\n%s,kube-controller-manager,kube-controller-manager,"system:masters"\n' \
    "$admin_token" "$kcm_token" > tokens.csv
  echo "$admin_token" > admin.token
  echo "$kcm_token" > kcm.token
  rm -f ./*.csr ./*.ext
)

write_kubeconfig() { # file token
  (
    umask 077
    cat > "$1" <<KC
apiVersion: v1
kind: Config
clusters:
- name: trueup-test
  cluster:
    server: https://127.0.0.1:$API_PORT
    certificate-authority-data: $(base64 -w0 "$PKI/ca.crt")
users:
- name: kube-admin
  user:
    token: $2
contexts:
- name: trueup-test
  context:
    cluster: trueup-test
    user: kube-admin
    namespace: default
current-context: trueup-test
KC
  )
}
write_kubeconfig "$RUN/kubeconfig" "$(<"$PKI/admin.token")"
write_kubeconfig "$RUN/kcm.kubeconfig" "$(<"$PKI/kcm.token")"

# ---------- etcd ----------
mkdir -p "$RUN/etcd-data"; chmod 700 "$RUN/etcd-data"
log "starting etcd on 127.0.0.1:$ETCD_PORT"
setsid etcd --name trueup-etcd --data-dir "$RUN/etcd-data" \
  --listen-client-urls "http://127.0.0.1:$ETCD_PORT" --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
  --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
  --initial-cluster "trueup-etcd=http://127.0.0.1:$ETCD_PEER_PORT" --initial-cluster-state new \
  --quota-backend-bytes 2147483648 --log-outputs stderr \
  </dev/null >"$RUN/etcd.log" 2>&1 &
echo $! > "$RUN/etcd.pid"

alive() { # NAME: the PID this run recorded still runs that binary
  local f=$RUN/$1.pid pid exe
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ -n $pid && -d /proc/$pid ]] || return 1
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  [[ $exe == *"/$1" ]]
}
for i in $(seq 1 60); do
  curl -fsS "http://127.0.0.1:$ETCD_PORT/health" 2>/dev/null | grep -q '"health":"true"' && break
  alive etcd || die "etcd exited, see $RUN/etcd.log"
  sleep 0.5
  (( i == 60 )) && die "etcd not healthy after 30s, see $RUN/etcd.log"
done

# ---------- kube-apiserver ----------
log "starting kube-apiserver on https://127.0.0.1:$API_PORT"
setsid "$BIN/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
  --insecure-port=0 \
  --cert-dir="$RUN/certs" --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
  --client-ca-file="$PKI/ca.crt" --token-auth-file="$PKI/tokens.csv" \
  --authorization-mode=RBAC --anonymous-auth=false \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
  --service-cluster-ip-range=10.96.0.0/12 --allow-privileged=true \
  --profiling=false --endpoint-reconciler-type=lease \
  </dev/null >"$RUN/kube-apiserver.log" 2>&1 &
echo $! > "$RUN/kube-apiserver.pid"
TOKEN=$(<"$PKI/admin.token")
for i in $(seq 1 240); do
  [[ "$(curl -sS --cacert "$PKI/ca.crt" -H "Authorization: Bearer $TOKEN" "https://127.0.0.1:$API_PORT/readyz" 2>/dev/null)" == ok ]] && break
  alive kube-apiserver || die "kube-apiserver exited, see $RUN/kube-apiserver.log"
  sleep 0.5
  (( i == 240 )) && die "kube-apiserver not ready after 120s, see $RUN/kube-apiserver.log"
done
log "kube-apiserver ready ($("$BIN/kube-apiserver" --version))"

# ---------- kube-controller-manager (optional) ----------
if [[ $WITH_KCM == 1 ]]; then
  log "starting kube-controller-manager on 127.0.0.1:$KCM_PORT"
  setsid "$BIN/kube-controller-manager" \
    --kubeconfig="$RUN/kcm.kubeconfig" \
    --authentication-kubeconfig="$RUN/kcm.kubeconfig" --authorization-kubeconfig="$RUN/kcm.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --port=0 --cert-dir="$RUN/kcm-certs" \
    --leader-elect=false --use-service-account-credentials=false \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range=10.96.0.0/12 --allocate-node-cidrs=false \
    --profiling=false \
    </dev/null >"$RUN/kube-controller-manager.log" 2>&1 &
  echo $! > "$RUN/kube-controller-manager.pid"
  sleep 1
  alive kube-controller-manager || die "kube-controller-manager exited, see $RUN/kube-controller-manager.log"
fi

log "pids: $(for n in etcd kube-apiserver kube-controller-manager; do [[ -f $RUN/$n.pid ]] && printf '%s=%s ' "$n" "$(<"$RUN/$n.pid")"; done)"
log "kubeconfig: $RUN/kubeconfig   stop with: $HERE/stop.sh $RUN"
echo "$RUN"
