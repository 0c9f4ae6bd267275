"""Peak RSS per process and CPU% of a process tree, sampled with psutil while a load runs."""

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


class TreeMonitor:
    """`with TreeMonitor(pids) as m:` ... then m.peak_rss_mb {label#pid: MB} and m.cpu_percent (whole tree)."""

    def __init__(self, pids: list[int], interval: float = 0.25):
        self._roots = [psutil.Process(p) for p in pids]
        self._interval = interval
        self._stop = threading.Event()
        self._procs: dict[int, psutil.Process] = {}
        self.peak_rss_mb: dict[str, float] = {}
        self.cpu_percent = 0.0

    def _tree(self) -> list[psutil.Process]:
        found = []
        for root in self._roots:
            try:
                found += [root, *root.children(recursive=True)]
            except psutil.Error:
                pass
        for proc in found:
            if proc.pid not in self._procs:
                self._procs[proc.pid] = proc
                try:
                    proc.cpu_times()
                except psutil.Error:
                    pass
        return found

    def _cpu_seconds(self) -> float:
        total = 0.0
        for proc in self._procs.values():
            try:
                t = proc.cpu_times()
                total += t.user + t.system
                self._last_cpu[proc.pid] = t.user + t.system
            except psutil.Error:
                total += self._last_cpu.get(proc.pid, 0.0)
        return total

    def _sample(self) -> None:
        for proc in self._tree():
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
        self._last_cpu: dict[int, float] = {}
        self._tree()
        self._cpu0 = self._cpu_seconds()
        self._t0 = time.perf_counter()
        self._sample()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._tree()
        elapsed = time.perf_counter() - self._t0
        self.cpu_percent = round(100 * (self._cpu_seconds() - self._cpu0) / max(elapsed, 1e-9), 1)
