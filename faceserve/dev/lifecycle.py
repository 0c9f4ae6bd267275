"""The one way the local servers (Triton, PostgreSQL, nginx, the cluster) run in a `with` block."""

from __future__ import annotations

import contextlib
import os
import subprocess
from typing import Self


class StartedInWith:
    """`start()` on entry, and `close()` again when starting fails half-way, so nothing is left running;
    `close()` on exit. Subclasses define both."""

    def start(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def signal_then_wait(process: subprocess.Popen, signum: int, timeout_s: float, *, group: bool = False) -> bool:
    """Send `signum` to the process (or its whole process group) and wait for it to exit; whether it did
    within `timeout_s`. What to do with one that did not is the caller's: each server dies its own way."""
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(process.pid, signum)
        elif process.poll() is None:
            process.send_signal(signum)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return False
    return True
