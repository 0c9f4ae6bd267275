"""The one way the local servers (Triton, PostgreSQL, nginx, the cluster) run in a `with` block."""

from __future__ import annotations

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
