"""The container's start-up check (the entrypoint of `make image`'s image, bentos/image/Dockerfile.j2).

    python -m faceserve.preflight ENTRYPOINT [ARG...]

Reads the configuration as the service will and checks what the service itself would only find out at the first
request that needs it: that an SQLite store lies on a mounted volume (in a container anything else is lost with
the container) and that the store's folder is writable. A bad configuration ends the container at once with one
sentence on stderr and exit status 2, before BentoML starts anything; a good one hands over to ENTRYPOINT (BentoML's
own) with exec, so that it keeps the container's pid and its signals.
"""

from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

from faceserve.settings import Settings
from faceserve.store import SQLITE_PREFIX

BAD_CONFIGURATION = 2


class ConfigurationError(Exception):
    pass


def mount_points(mountinfo: Path = Path("/proc/self/mountinfo")) -> set[Path]:
    # The fifth field of each line is the mount point, octal-escaped (a space is \040).
    return {Path(line.split()[4].encode().decode("unicode_escape")) for line in mountinfo.read_text().splitlines()}


def check_sqlite_store(database: Path, mounts: set[Path]) -> None:
    folder = database.parent
    if not any(folder == mount or mount in folder.parents for mount in mounts - {Path("/")}):
        raise ConfigurationError(
            f"the store {database} is not on a mounted volume, so everything enrolled would be lost with the "
            f"container: mount one at {folder} (podman run -v faceserve-data:{folder} ...) or set FACESERVE_DATA_DIR "
            "to where one is mounted")
    if not folder.is_dir():
        raise ConfigurationError(f"the store's folder {folder} does not exist")
    try:
        tempfile.TemporaryFile(dir=folder).close()  # SQLite creates its journal beside the database
        if database.exists():
            database.open("r+b").close()
    except OSError as error:
        raise ConfigurationError(
            f"the store {database} is not writable by uid {os.getuid()} ({error.strerror}): give the volume to that "
            "user, or mount it read-write") from None


def check(mounts: set[Path] | None = None) -> Settings:
    """The settings the service will read, or ConfigurationError saying what is wrong."""
    try:
        settings = Settings.from_env()
    except (OSError, ValueError) as error:
        raise ConfigurationError(f"the configuration cannot be read: {error}") from None
    if settings.store.startswith(SQLITE_PREFIX):
        check_sqlite_store(Path(settings.store[len(SQLITE_PREFIX):]), mount_points() if mounts is None else mounts)
    return settings


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python -m faceserve.preflight ENTRYPOINT [ARG...]")
    try:
        check()
    except ConfigurationError as error:
        print(f"faceserve: not started: {error}", file=sys.stderr)
        sys.exit(BAD_CONFIGURATION)
    os.execv(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
