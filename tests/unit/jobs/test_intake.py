"""A job's images as submitted: zip members by name in order, archiver litter skipped, limits before reading."""

from __future__ import annotations

import zipfile

import pytest

from faceserve.errors import InvalidRequest, LimitExceeded
from faceserve.jobs import JobLimits, intake


def archive(tmp_path, members: dict[str, bytes]):
    path = tmp_path / "photos.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as handle:
        for name, data in members.items():
            handle.writestr(name, data)
    return path


def test_zip_members_in_order_without_folders_or_litter(tmp_path):
    path = archive(tmp_path, {"b.jpg": b"1", "sub/a.png": b"22", "__MACOSX/sub/._a.png": b"x", "sub/.DS_Store": b"x"})
    items = intake.from_zip(path, JobLimits())
    assert [(item.name, item.image) for item in items] == [("b.jpg", b"1"), ("sub/a.png", b"22")]


@pytest.mark.parametrize("members, code", [
    ({f"{i}.jpg": b"1" for i in range(4)}, "job_images"),
    ({"big.jpg": b"\0" * 1000}, "job_bytes"),  # compresses to a few bytes: the limit is on what it expands to
])
def test_zip_limits(tmp_path, members, code):
    with pytest.raises(LimitExceeded) as error:
        intake.from_zip(archive(tmp_path, members), JobLimits(max_images=3, max_bytes=999))
    assert error.value.code == code


def test_not_a_zip(tmp_path):
    path = tmp_path / "photos.zip"
    path.write_bytes(b"PK\3\4 not really")
    with pytest.raises(InvalidRequest, match="not a zip file"):
        intake.from_zip(path, JobLimits())


def test_upload_names_lose_the_temporary_prefix(tmp_path):
    path = tmp_path / "tmpab_cd12xface 1.jpg"
    path.write_bytes(b"1")
    assert [item.name for item in intake.from_uploads([path])] == ["face 1.jpg"]
