"""A job's images as submitted: uploads, the members of a zip file, or URLs, each with the name its result carries.

Nothing is decoded here: an image that is not one fails on its own result line. The limits checked here are the
ones that must hold before anything is read into memory (a zip's member count and declared sizes, then its real
sizes as they are read); the queue checks the same limits again on what it is given.
"""

from __future__ import annotations

import lzma
import re
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from faceserve.errors import InvalidRequest, LimitExceeded
from faceserve.jobs.queue import JobLimits, NewItem

# BentoML keeps an upload in a NamedTemporaryFile whose name is "tmp", eight random characters, then the
# client's file name.
_TEMPORARY_PREFIX = re.compile(r"^tmp[a-z0-9_]{8}(?=.)")
# What archivers add beside the files: macOS resource forks and Finder state.
_ARCHIVER_LITTER = ("__MACOSX/", ".DS_Store")
# A central directory entry is 46 bytes and its name: room for each image's entry, its folders and an archiver's
# litter beside it, with names of up to 1 KiB.
_DIRECTORY_BYTES_PER_IMAGE = 4 * (46 + 1024)


def from_uploads(uploads: list[Path]) -> list[NewItem]:
    return [NewItem(_TEMPORARY_PREFIX.sub("", path.name) or f"image {i + 1}", image=path.read_bytes())
            for i, path in enumerate(uploads)]


def from_urls(urls: list[str]) -> list[NewItem]:
    return [NewItem(url, url=url) for url in urls]


def from_zip(path: Path, limits: JobLimits) -> list[NewItem]:
    """Every file of the archive, in its order, named by its path inside it. An archive we cannot read whole (not
    a zip, truncated, an encrypted or corrupt member, a compression we lack) is a 400 `invalid_archive`, and
    nothing of it is queued."""
    try:
        with open(path, "rb") as handle:
            _check_directory(handle, limits)
            with zipfile.ZipFile(handle) as archive:
                return _members(archive, limits)
    except _UNREADABLE as exc:
        raise _invalid("the archive", exc) from None


def _check_directory(handle, limits: JobLimits) -> None:
    """Bound the archive's central directory before `ZipFile` reads it whole into memory (an entry of a few bytes
    there costs half a KiB here)."""
    end = zipfile._EndRecData(handle)  # the stdlib's own reader of the end record; None: no zip at all
    if end is None:
        raise zipfile.BadZipFile("it is not a zip file")
    size, most = end[zipfile._ECD_SIZE], limits.max_images * _DIRECTORY_BYTES_PER_IMAGE
    if size > most:
        raise LimitExceeded(f"the archive's directory is {size} bytes, more entries than a job of at most "
                            f"{limits.max_images} images holds ({most} bytes)", code="job_images")


def _members(archive: zipfile.ZipFile, limits: JobLimits) -> list[NewItem]:
    members = [m for m in archive.infolist()
               if not m.is_dir() and not any(part in m.filename for part in _ARCHIVER_LITTER)]
    limits.check_images(len(members))
    limits.check_bytes(sum(m.file_size for m in members))
    items, size = [], 0
    for member in members:
        try:
            with archive.open(member) as handle:
                # The declared sizes above may lie: read no more than what is left of the limit, plus one.
                data = handle.read(limits.max_bytes - size + 1)
        except _UNREADABLE as exc:
            raise _invalid(f"the archive's member {member.filename[:100]!r}", exc) from None
        size += len(data)
        limits.check_bytes(size)
        items.append(NewItem(str(PurePosixPath(member.filename)), image=data))
    return items


# What reading a zip raises on bytes it cannot make sense of: its own BadZipFile (a failed CRC too), a password it
# lacks (RuntimeError), a method it lacks (NotImplementedError, a RuntimeError), each decompressor's error on a
# corrupt stream (zlib.error; bz2: OSError; lzma.LZMAError), an end of data where more was promised (EOFError), a
# name that is not the UTF-8 it claims (ValueError).
_UNREADABLE = (zipfile.BadZipFile, zipfile.LargeZipFile, RuntimeError, zlib.error, OSError, lzma.LZMAError,
               EOFError, ValueError)


def _invalid(what: str, exc: BaseException) -> InvalidRequest:
    if isinstance(exc, NotImplementedError):
        reason = "its compression method is not supported"
    elif isinstance(exc, RuntimeError) and "encrypted" in str(exc):
        reason = "it is encrypted"
    elif isinstance(exc, EOFError):
        reason = "it is truncated"
    elif isinstance(exc, (zlib.error, lzma.LZMAError, OSError)):
        reason = "its compressed data is corrupt"
    else:
        text = str(exc).strip()
        reason = text.splitlines()[0][:200] if text else type(exc).__name__
    return InvalidRequest(f"{what} cannot be read ({reason}): send a zip file whose members are stored or deflated, "
                          "without a password", code="invalid_archive")
