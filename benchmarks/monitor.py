"""psutil views of a process tree under load: peak RSS per process (sampled through the whole run) and
CPU time over exactly the measured window (`CpuWindow`, started and stopped at the window's edges)."""

from __future__ import annotations

import threading
import time

import psutil


def _label(proc: psutil.Process) -> str:
    try:
        cmd = proc.cmdline()
    except (psutil.Error, OSError):
        return proc.name()
    text = " ".join(cmd)
    for key in ("tritonserver", "gunicorn", "locust", "bentoml", "python"):
        if key in text:
            return key
    return proc.name()


def _tree(roots: list[psutil.Process]) -> list[psutil.Process]:
    found = []
    for root in roots:
        try:
            found += [root, *root.children(recursive=True)]
        except psutil.Error:
            pass
    return found


class CpuWindow:
    """User + system CPU seconds of a process tree between start() and stop(), and the wall seconds between.

    Children are looked up at both edges; one that exits inside the window keeps the time last read from it.
    """

    def __init__(self, pids: list[int]):
        self._roots = [psutil.Process(p) for p in pids]
        self._last: dict[int, float] = {}
        self._cpu0 = self._t0 = 0.0
        self.cpu_s: float | None = None
        self.seconds: float | None = None

    def _total(self) -> float:
        for proc in _tree(self._roots):
            try:
                t = proc.cpu_times()
                self._last[proc.pid] = t.user + t.system
            except psutil.Error:
                pass
        return sum(self._last.values())

    def start(self) -> None:
        self._cpu0 = self._total()
        self._t0 = time.perf_counter()

    def stop(self) -> None:
        self.seconds = time.perf_counter() - self._t0
        self.cpu_s = self._total() - self._cpu0

    @property
    def percent(self) -> float | None:
        """100 = one core busy for the whole window."""
        if self.cpu_s is None or not self.seconds:
            return None
        return round(100 * self.cpu_s / self.seconds, 1)


class TreeMonitor:
    """`with TreeMonitor(pids) as m:` ... then m.peak_rss_mb {label#pid: MB}, sampled every `interval` s."""

    def __init__(self, pids: list[int], interval: float = 0.25):
        self._roots = [psutil.Process(p) for p in pids]
        self._interval = interval
        self._stop = threading.Event()
        self.peak_rss_mb: dict[str, float] = {}

    def _sample(self) -> None:
        for proc in _tree(self._roots):
            try:
                rss = proc.memory_info().rss / 2**20
            except psutil.Error:
                continue
            key = f"{_label(proc)}#{proc.pid}"
            self.peak_rss_mb[key] = round(max(self.peak_rss_mb.get(key, 0.0), rss), 1)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> "TreeMonitor":
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
