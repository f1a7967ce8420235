#!/usr/bin/env bash
# Builds REAL kube-apiserver + kube-controller-manager v1.20.2 (linux/amd64) from Debian
# bookworm's "kubernetes" SOURCE package with Debian's Go 1.19, and installs Debian's
# etcd-server 3.4 as storage. No prebuilt Kubernetes binary is downloaded: everything comes
# from Debian's archive (apt-get source; a deb-src entry is added when missing).
#
# The binaries are cached OUTSIDE the repository so reruns (and CI with a cached dir) skip the
# ~5-8 minute build:
#   TRUEUP_KUBE_CACHE  (default $HOME/.cache/trueup-tools/kube-v1.20)
#     bin/kube-apiserver, bin/kube-controller-manager, build.log
#
# Usage: setup.sh [--force]      (--force rebuilds even when cached binaries exist)
# Then:  start.sh                (see start.sh for the env it prints)
set -euo pipefail

CACHE=${TRUEUP_KUBE_CACHE:-$HOME/.cache/trueup-tools/kube-v1.20}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
DEB_SRC_VERSION=1.20.5+really1.20.2-1.1+deb12u1
DEB_ORIG=kubernetes_1.20.5+really1.20.2.orig.tar.gz
DEB_ORIG_SHA256=b83c0780efb182d928dc63d46488a847f161f04e40a94b96bf5247dd671ecdfc
WANT_VERSION="Kubernetes v1.20.2"

FORCE=0
for a in "$@"; do
  case $a in
    --force) FORCE=1 ;;
    *) echo "usage: $0 [--force]" >&2; exit 2 ;;
  esac
done
log() { echo "[setup] $*" >&2; }

built_ok() {
  [[ -x $CACHE/bin/kube-apiserver && -x $CACHE/bin/kube-controller-manager ]] &&
    [[ "$("$CACHE/bin/kube-apiserver" --version 2>/dev/null)" == "$WANT_VERSION" ]]
}

# ---------- Debian packages (runtime: etcd; build: Go, make, rsync, reflect2 1.0.2) ----------
export DEBIAN_FRONTEND=noninteractive
SUDO=()
(( EUID == 0 )) || SUDO=(sudo)
runtime_pkgs=(etcd-server etcd-client openssl curl iproute2)
build_pkgs=(golang-go rsync jq make python3 golang-github-modern-go-reflect2-dev dpkg-dev)
pkgs=("${runtime_pkgs[@]}")
if (( FORCE )) || ! built_ok; then pkgs+=("${build_pkgs[@]}"); fi
need_update=0
if (( FORCE )) || ! built_ok; then
  if ! grep -rqs '^Types:.*deb-src' /etc/apt/sources.list.d/ && ! grep -qs '^deb-src' /etc/apt/sources.list; then
    log "adding Debian deb-src entries (/etc/apt/sources.list.d/debian-src.sources)"
    "${SUDO[@]}" tee /etc/apt/sources.list.d/debian-src.sources >/dev/null <<'SRC'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    need_update=1
  fi
fi
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if (( need_update )) || (( ${#missing[@]} )); then log "apt-get update"; "${SUDO[@]}" apt-get update -qq; fi
if (( ${#missing[@]} )); then
  log "installing: ${missing[*]}" # etcd-server's postinst starts no daemon without systemd
  "${SUDO[@]}" apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if (( ! FORCE )) && built_ok; then
  log "cached: $CACHE/bin ($("$CACHE/bin/kube-apiserver" --version)); nothing to build"
  echo "$CACHE/bin"
  exit 0
fi

# ---------- build v1.20.2 from Debian's source package ----------
log "$(go version)"
work=$(mktemp -d "${TMPDIR:-/tmp}/trueup-kube-build.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$CACHE/src"
cd "$CACHE/src"
# The orig tarball is kept in the cache too: re-downloading 30 MB on --force is pointless.
if [[ ! -f $DEB_ORIG ]] || ! echo "$DEB_ORIG_SHA256  $DEB_ORIG" | sha256sum -c --quiet - 2>/dev/null; then
  apt-cache showsrc kubernetes 2>/dev/null | grep -q '^Package: kubernetes' || "${SUDO[@]}" apt-get update -qq
  log "downloading Debian source package kubernetes=$DEB_SRC_VERSION"
  apt-get source --download-only "kubernetes=$DEB_SRC_VERSION" >/dev/null
fi
echo "$DEB_ORIG_SHA256  $DEB_ORIG" | sha256sum -c --quiet - || { log "orig tarball sha256 mismatch"; exit 1; }
tar xzf "$DEB_ORIG" -C "$work"
cd "$work/kubernetes-1.20.2"
# vendored reflect2 1.0.1 crashes at runtime under Go >= 1.18; Debian ships the fixed 1.0.2.
V=vendor/github.com/modern-go/reflect2
rm -f "$V"/*.go "$V"/*.s
cp /usr/share/gocode/src/github.com/modern-go/reflect2/*.go /usr/share/gocode/src/github.com/modern-go/reflect2/*.s "$V"/
sed -i 's#github.com/modern-go/reflect2 v1.0.1#github.com/modern-go/reflect2 v1.0.2#g' go.mod vendor/modules.txt
log "building kube-apiserver + kube-controller-manager v1.20.2 (~5-8 min on 2 cores), log: $CACHE/build.log"
start=$SECONDS
# GOCACHE inside the work dir: the build must not depend on (or pollute) the user's Go cache.
if ! env CGO_ENABLED=0 GOCACHE="$work/gocache" GOPATH="$work/gopath" \
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$CACHE/build.log" 2>&1; then
  tail -30 "$CACHE/build.log" >&2
  log "build FAILED ($CACHE/build.log)"
  exit 1
fi
mkdir -p "$CACHE/bin"
install -m 0755 _output/local/bin/linux/amd64/kube-apiserver _output/local/bin/linux/amd64/kube-controller-manager "$CACHE/bin/"
log "built in $((SECONDS - start))s"
built_ok || { log "built binaries do not report $WANT_VERSION"; exit 1; }
for b in kube-apiserver kube-controller-manager; do
  log "$b: $("$CACHE/bin/$b" --version) sha256 $(sha256sum "$CACHE/bin/$b" | cut -d' ' -f1)"
done
log "$(etcd --version | head -1)"
log "start with: $HERE/start.sh"
echo "$CACHE/bin"
