"""Active health checks for nginx's upstreams: open-source nginx only learns from real requests that an
instance is gone, and never that one is up but not ready (starting, or its Triton down). A thread asks every
instance's `/readyz`, as Kubernetes does, and has nginx route around the ones that are not ready."""

from __future__ import annotations

import logging
import threading
from typing import Callable

import httpx

from faceserve.dev.lifecycle import StartedInWith

log = logging.getLogger(__name__)


class ReadinessWatch(StartedInWith):
    """`with ReadinessWatch(urls, route):` polls `url + /readyz` for each upstream every `interval_s` and calls
    `route(unready)` with the set of upstreams to take out whenever that set changes.

    A refused connection takes an upstream out at once (it is dead); any other failure (a timeout under load,
    a 503) only after `failures_to_remove` polls in a row. One 200 brings it back. When no upstream is ready,
    none is taken out: nginx then passes the instances' own 503s on, which say why, rather than its own.
    """

    def __init__(self, upstreams: dict[str, str], route: Callable[[frozenset[str]], None], *,
                 interval_s: float = 0.5, timeout_s: float = 2.0, failures_to_remove: int = 2):
        self.upstreams = upstreams  # nginx's address -> the instance's base URL
        self.route = route
        self.interval_s, self.timeout_s, self.failures_to_remove = interval_s, timeout_s, failures_to_remove
        self.failures = dict.fromkeys(upstreams, 0)
        self.unready: frozenset[str] = frozenset()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="faceserve-readiness", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        with httpx.Client(timeout=self.timeout_s) as client:
            while not self._stop.wait(self.interval_s):
                self.poll(client)

    def poll(self, client: httpx.Client) -> None:
        for address, url in self.upstreams.items():
            weight = self._failure_weight(client, url)
            self.failures[address] = self.failures[address] + weight if weight else 0
        unready = frozenset(a for a, count in self.failures.items() if count >= self.failures_to_remove)
        if unready == frozenset(self.upstreams):
            unready = frozenset()
        if unready != self.unready:
            for address in sorted(unready - self.unready):
                log.warning("%s is not ready: nginx sends it nothing until /readyz answers 200", address)
            for address in sorted(self.unready - unready):
                log.info("%s is ready again: back in nginx's upstreams", address)
            try:
                self.route(unready)
            except Exception:  # nginx refused or is gone: keep polling, try again at the next change
                log.exception("could not reconfigure nginx")
                return
            self.unready = unready

    def _failure_weight(self, client: httpx.Client, url: str) -> int:
        """0 when ready; 1 for a failed poll; enough to remove at once when nothing listens."""
        try:
            return 0 if client.get(f"{url}/readyz").status_code == 200 else 1
        except httpx.ConnectError:
            return self.failures_to_remove
        except httpx.HTTPError:
            return 1
