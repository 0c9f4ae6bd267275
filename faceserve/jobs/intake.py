"""A job's images as submitted: uploads, the members of a zip file, or URLs, each with the name its result carries.

Nothing is decoded here: an image that is not one fails on its own result line. The limits checked here are the
ones that must hold before anything is read into memory (a zip's member count and declared sizes, then its real
sizes as they are read); the queue checks the same limits again on what it is given.
"""

from __future__ import annotations

import re
import zipfile
from pathlib import Path, PurePosixPath

from faceserve.errors import InvalidRequest
from faceserve.jobs.queue import JobLimits, NewItem

# BentoML keeps an upload in a NamedTemporaryFile whose name is "tmp", eight random characters, then the
# client's file name.
_TEMPORARY_PREFIX = re.compile(r"^tmp[a-z0-9_]{8}(?=.)")
# What archivers add beside the files: macOS resource forks and Finder state.
_ARCHIVER_LITTER = ("__MACOSX/", ".DS_Store")


def from_uploads(uploads: list[Path]) -> list[NewItem]:
    return [NewItem(_TEMPORARY_PREFIX.sub("", path.name) or f"image {i + 1}", image=path.read_bytes())
            for i, path in enumerate(uploads)]


def from_urls(urls: list[str]) -> list[NewItem]:
    return [NewItem(url, url=url) for url in urls]


def from_zip(path: Path, limits: JobLimits) -> list[NewItem]:
    """Every file of the archive, in its order, named by its path inside it."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist()
                       if not m.is_dir() and not any(part in m.filename for part in _ARCHIVER_LITTER)]
            limits.check_images(len(members))
            limits.check_bytes(sum(m.file_size for m in members))
            items, size = [], 0
            for member in members:
                with archive.open(member) as handle:
                    # The declared sizes above may lie: read no more than what is left of the limit, plus one.
                    data = handle.read(limits.max_bytes - size + 1)
                size += len(data)
                limits.check_bytes(size)
                items.append(NewItem(str(PurePosixPath(member.filename)), image=data))
            return items
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
        raise InvalidRequest(f"the archive is not a zip file we read: {exc}", code="invalid_archive") from None

