"""Load generators: Locust (headless, CSV) for HTTP services; an asyncio closed loop in-process and
for tritonclient's async API (perf_analyzer is not runnable here: the pip `perf_analyzer` is a placeholder).

Every run: `concurrency` closed-loop clients, `warmup_s` excluded, then `duration_s` measured.
"""

from __future__ import annotations

import asyncio
import csv
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np

HERE = Path(__file__).resolve().parent


def _result(count: int, errors: int, elapsed: float, latencies_ms: list[float] | None = None,
            p50=None, p95=None, p99=None, first_error: str | None = None) -> dict:
    if latencies_ms:
        p50, p95, p99 = (float(np.percentile(latencies_ms, q)) for q in (50, 95, 99))
    return {"requests": count, "errors": errors, "duration_s": round(elapsed, 3),
            "throughput": round(count / elapsed, 2) if elapsed > 0 else 0.0,
            "p50_ms": None if p50 is None else round(p50, 2), "p95_ms": None if p95 is None else round(p95, 2),
            "p99_ms": None if p99 is None else round(p99, 2), "first_error": first_error}


def locust_binary() -> str | None:
    found = Path(sys.executable).with_name("locust")
    return str(found) if found.exists() else shutil.which("locust")


def run_locust(url: str, images: list[Path], concurrency: int, warmup_s: float, duration_s: float,
               csv_dir: Path, path: str = "/analyze", label: str = "run") -> dict:
    """`locust --headless --csv`; statistics reset after the warm-up by the locustfile."""
    binary = locust_binary()
    if binary is None:
        raise RuntimeError("locust is not installed (pip install -r requirements/bench.txt)")
    csv_dir.mkdir(parents=True, exist_ok=True)
    prefix = csv_dir / label
    env = {**os.environ, "BENCH_IMAGES": os.pathsep.join(map(str, images)), "BENCH_PATH": path,
           "BENCH_WARMUP_S": str(warmup_s)}
    command = [binary, "-f", str(HERE / "locustfile.py"), "--headless", "--host", url,
               "-u", str(concurrency), "-r", str(concurrency), "-t", f"{warmup_s + duration_s:.0f}s",
               "--csv", str(prefix), "--only-summary", "--stop-timeout", "5", "--loglevel", "WARNING"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=warmup_s + duration_s + 90)
    stats = prefix.with_name(prefix.name + "_stats.csv")
    if not stats.exists():
        raise RuntimeError(f"locust wrote no statistics (rc {done.returncode}): {done.stderr[-800:]}")
    row = next(r for r in csv.DictReader(stats.open()) if r["Name"] == "Aggregated")
    failures = prefix.with_name(prefix.name + "_failures.csv")
    first_error = None
    if failures.exists():
        first_error = next((f"{r['Error']} x{r['Occurrences']}" for r in csv.DictReader(failures.open())), None)
    count, errors = int(row["Request Count"]), int(row["Failure Count"])
    throughput = float(row["Requests/s"])
    result = _result(count, errors, count / throughput if throughput else 0.0,
                     p50=float(row["50%"]), p95=float(row["95%"]), p99=float(row["99%"]), first_error=first_error)
    result["throughput"] = round(throughput, 2)
    result["load_generator"] = "locust"
    return result


async def closed_loop(call: Callable[[int], Awaitable[object]], concurrency: int, warmup_s: float,
                      duration_s: float) -> dict:
    """`concurrency` tasks each awaiting call(i) back to back; only calls that start after warm-up count."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    latencies: list[float] = []
    errors = 0
    first_error: list[str] = []
    counter = iter(range(10**12))

    async def client():
        nonlocal errors
        while (began := loop.time()) < stop_at:
            try:
                await call(next(counter))
                ok = True
            except Exception as exc:  # counted, reported, never fatal to the run
                ok = False
                if not first_error:
                    first_error.append(f"{type(exc).__name__}: {exc}"[:300])
            if began >= measure_from:
                if ok:
                    latencies.append((loop.time() - began) * 1e3)
                else:
                    errors += 1
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = loop.time() - measure_from
    result = _result(len(latencies) + errors, errors, elapsed, latencies,
                     first_error=first_error[0] if first_error else None)
    result["load_generator"] = "asyncio closed loop"
    return result


def timed_per_item(run: Callable[[int], object], items: int, duration_s: float) -> dict:
    """Sequential calls (concurrency 1) for duration_s, cycling over `items` inputs."""
    latencies, i = [], 0
    stop_at = time.perf_counter() + duration_s
    started = time.perf_counter()
    while time.perf_counter() < stop_at:
        t = time.perf_counter()
        run(i % items)
        latencies.append((time.perf_counter() - t) * 1e3)
        i += 1
    result = _result(len(latencies), 0, time.perf_counter() - started, latencies)
    result["load_generator"] = "sequential loop"
    return result
