"""A job's images as submitted: zip members by name in order, archiver litter skipped, limits before reading."""

from __future__ import annotations

import zipfile

import pytest

from faceserve.errors import InvalidRequest, LimitExceeded
from faceserve.jobs import JobLimits, intake
from tests.support import marked_encrypted, zip_bytes


def archive(tmp_path, members: dict[str, bytes]):
    path = tmp_path / "photos.zip"
    path.write_bytes(zip_bytes(members, zipfile.ZIP_DEFLATED))
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


def deflated(data: bytes = bytes(range(256)) * 40) -> bytearray:
    return bytearray(zip_bytes({"a.jpg": data}, zipfile.ZIP_DEFLATED))


def corrupt_deflate() -> bytes:
    raw = deflated()
    raw[30 + len("a.jpg"):30 + len("a.jpg") + 16] = b"\xff" * 16  # the deflate stream's first bytes
    return bytes(raw)


def encrypted() -> bytes:
    return marked_encrypted(bytes(deflated()))


def unknown_method() -> bytes:
    raw = deflated()
    raw[8] = 99
    raw[raw.index(b"PK\1\2") + 10] = 99
    return bytes(raw)


def corrupt(method: int) -> bytes:
    raw = bytearray(zip_bytes({"a.jpg": bytes(range(256)) * 40}, method))
    raw[40:60] = bytes(20)
    return bytes(raw)


def stored_bad_crc() -> bytes:
    raw = bytearray(zip_bytes({"a.jpg": b"0123456789"}, zipfile.ZIP_STORED))
    raw[30 + len("a.jpg")] ^= 1
    return bytes(raw)


@pytest.mark.parametrize("data, reason", [
    (encrypted(), "it is encrypted"),
    (corrupt_deflate(), "its compressed data is corrupt"),
    (corrupt(zipfile.ZIP_BZIP2), "its compressed data is corrupt"),
    (corrupt(zipfile.ZIP_LZMA), "its compressed data is corrupt"),
    (unknown_method(), "its compression method is not supported"),
    (stored_bad_crc(), "Bad CRC-32 for file 'a.jpg'"),
    (zip_bytes({"a.jpg": b"1" * 100}, zipfile.ZIP_DEFLATED)[:-30], "not a zip file"),  # truncated in its directory
    (zip_bytes({"a.jpg": b"1" * 100}, zipfile.ZIP_DEFLATED)[:60], "not a zip file"),
    (b"", "not a zip file"),
    (b"%PDF-1.4 not a zip", "not a zip file"),
], ids=["encrypted", "corrupt-deflate", "corrupt-bzip2", "corrupt-lzma", "unknown-method", "bad-crc",
        "truncated-directory", "truncated-member", "empty", "pdf"])
def test_an_unreadable_archive_is_invalid_archive(tmp_path, data, reason):
    """Issue 20, finding 5: each was a 500; each is a 400 `invalid_archive` saying why, and nothing of it is read
    into a job."""
    path = tmp_path / "photos.zip"
    path.write_bytes(data)
    with pytest.raises(InvalidRequest) as error:
        intake.from_zip(path, JobLimits())
    assert (error.value.status, error.value.code) == (400, "invalid_archive")
    assert reason in error.value.message and "without a password" in error.value.message
    assert len(error.value.message) < 500


def test_a_directory_too_large_for_the_job_is_refused_before_it_is_read(tmp_path):
    """A directory of many empty entries costs the reader far more memory than its bytes: bounded by the job's
    images before `ZipFile` reads it."""
    path = tmp_path / "photos.zip"
    path.write_bytes(zip_bytes({f"__MACOSX/{i:05d}" + "x" * 900: b"" for i in range(20)}, zipfile.ZIP_DEFLATED))
    with pytest.raises(LimitExceeded) as error:
        intake.from_zip(path, JobLimits(max_images=2))
    assert (error.value.status, error.value.code) == (422, "job_images")
    assert "more entries than a job of at most 2 images holds" in error.value.message
    assert intake.from_zip(path, JobLimits(max_images=10)) == []  # litter only: within a larger job's room
