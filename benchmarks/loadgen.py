"""Load generators: Locust (headless, CSV) for HTTP services; an asyncio closed loop in-process and
for tritonclient's async API (perf_analyzer is not runnable here: the pip `perf_analyzer` is a placeholder).

Every run: `concurrency` closed-loop clients, `warmup_s` excluded, then a measured window of at least
`duration_s` that also lasts until `min_ok` requests succeeded (capped at `max_s`). Throughput counts
successful requests only; the server's CPU time is read at the window's two edges.
"""

from __future__ import annotations

import asyncio
import csv
import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np

from benchmarks.monitor import CpuWindow

HERE = Path(__file__).resolve().parent


def _result(count: int, errors: int, elapsed: float, latencies_ms: list[float] | None = None,
            p50=None, p95=None, p99=None, first_error: str | None = None) -> dict:
    """`count` requests completed in `elapsed` s, `errors` of them failed; throughput counts the others only."""
    if latencies_ms:
        p50, p95, p99 = (float(np.percentile(latencies_ms, q)) for q in (50, 95, 99))
    ok = count - errors
    return {"requests": count, "errors": errors, "successes": ok, "duration_s": round(elapsed, 3),
            "throughput": round(ok / elapsed, 2) if elapsed > 0 else 0.0,
            "p50_ms": None if p50 is None else round(p50, 2), "p95_ms": None if p95 is None else round(p95, 2),
            "p99_ms": None if p99 is None else round(p99, 2), "first_error": first_error}


def locust_binary() -> str | None:
    found = Path(sys.executable).with_name("locust")
    return str(found) if found.exists() else shutil.which("locust")


def _number(text: str | None) -> float | None:
    """A number from Locust's CSV; 'N/A' (no request in the window) and blanks are no value."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def parse_locust_csv(stats_csv: Path, failures_csv: Path | None = None) -> dict:
    """The Aggregated row of Locust's `_stats.csv` (and the first failure): counts, p50/p95/p99 in ms or None."""
    rows = list(csv.DictReader(stats_csv.open(newline=""))) if stats_csv.exists() else []
    row = next((r for r in rows if r.get("Name") == "Aggregated"), {})
    first_error = None
    if failures_csv is not None and failures_csv.exists():
        first_error = next((f"{r.get('Error')} x{r.get('Occurrences')}"
                            for r in csv.DictReader(failures_csv.open(newline=""))), None)
    count, errors = _number(row.get("Request Count")), _number(row.get("Failure Count"))
    return {"requests": int(count or 0), "errors": int(errors or 0), "p50_ms": _number(row.get("50%")),
            "p95_ms": _number(row.get("95%")), "p99_ms": _number(row.get("99%")), "first_error": first_error}


def locust_result(parsed: dict, window: dict) -> dict:
    """One measured run from the parsed CSV and the window the locustfile recorded (seconds, server CPU)."""
    seconds = window.get("seconds") or 0.0
    result = _result(parsed["requests"], parsed["errors"], seconds, p50=parsed["p50_ms"], p95=parsed["p95_ms"],
                     p99=parsed["p99_ms"], first_error=parsed["first_error"])
    cpu = window.get("server_cpu_s")
    result["cpu_percent"] = round(100 * cpu / seconds, 1) if cpu is not None and seconds else None
    if window.get("capped"):
        result["window_note"] = (f"stopped at the {seconds:.0f} s cap with fewer than "
                                 f"{window.get('min_ok')} successful requests")
    result["load_generator"] = "locust"
    return result


def run_locust(url: str, images: list[Path], concurrency: int, warmup_s: float, duration_s: float,
               csv_dir: Path, *, path: str = "/analyze", label: str = "run", form: dict | None = None,
               min_ok: int = 1, max_s: float = 60.0, server_pids: list[int] = ()) -> dict:
    """`locust --headless`; the locustfile measures the window (see its docstring), this reads what it wrote."""
    binary = locust_binary()
    if binary is None:
        raise RuntimeError("locust is not installed (pip install -r requirements/bench.txt)")
    csv_dir.mkdir(parents=True, exist_ok=True)
    prefix = csv_dir / label
    files = {kind: prefix.with_name(f"{prefix.name}_{kind}") for kind in ("stats.csv", "failures.csv", "window.json")}
    for file in files.values():
        file.unlink(missing_ok=True)
    env = {**os.environ, "BENCH_IMAGES": os.pathsep.join(map(str, images)), "BENCH_PATH": path,
           "BENCH_FORM": json.dumps(form or {}), "BENCH_WARMUP_S": str(warmup_s), "BENCH_DURATION_S": str(duration_s),
           "BENCH_MIN_OK": str(min_ok), "BENCH_MAX_S": str(max_s),
           "BENCH_SERVER_PIDS": ",".join(map(str, server_pids)), "BENCH_OUT": str(prefix)}
    # -t only guards against a locustfile that never ends its window: spawning, warm-up and the longest window fit.
    limit = math.ceil(warmup_s + max_s + 30)
    command = [binary, "-f", str(HERE / "locustfile.py"), "--headless", "--host", url,
               "-u", str(concurrency), "-r", str(4 * concurrency), "-t", f"{limit}s",
               "--only-summary", "--loglevel", "WARNING"]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=limit + 60)
    if not files["window.json"].exists():
        raise RuntimeError(f"locust ended before its measured window did (rc {done.returncode}): "
                           f"{done.stderr[-800:]}")
    window = json.loads(files["window.json"].read_text())
    return locust_result(parse_locust_csv(files["stats.csv"], files["failures.csv"]), window)


async def closed_loop(call: Callable[[int], Awaitable[object]], concurrency: int, warmup_s: float,
                      duration_s: float, min_ok: int = 1, max_s: float = 60.0, cpu: CpuWindow | None = None) -> dict:
    """`concurrency` tasks each awaiting call(i) back to back.

    The window opens with the first call after `warm-up` (cpu.start() then) and counts the calls that start in it;
    no call starts once it has lasted `duration_s` with `min_ok` successes (or `max_s`); it closes when the last
    call in flight returns (cpu.stop() then).
    """
    loop = asyncio.get_running_loop()
    warm_until = loop.time() + warmup_s
    window_start: float | None = None
    latencies: list[float] = []
    errors = 0
    first_error: list[str] = []
    counter = iter(range(10**12))

    def finished() -> bool:
        if window_start is None:
            return False
        measured = loop.time() - window_start
        return measured >= max_s or (measured >= duration_s and len(latencies) >= min_ok)

    async def client():
        nonlocal errors, window_start
        while not finished():
            began = loop.time()
            if window_start is None and began >= warm_until:
                window_start = began
                if cpu is not None:
                    cpu.start()
            try:
                await call(next(counter))
                ok = True
            except Exception as exc:  # counted, reported, never fatal to the run
                ok = False
                if not first_error:
                    first_error.append(f"{type(exc).__name__}: {exc}"[:300])
            if window_start is not None and began >= window_start:
                if ok:
                    latencies.append((loop.time() - began) * 1e3)
                else:
                    errors += 1
    await asyncio.gather(*(client() for _ in range(concurrency)))
    elapsed = loop.time() - window_start
    if cpu is not None:
        cpu.stop()
    result = _result(len(latencies) + errors, errors, elapsed, latencies,
                     first_error=first_error[0] if first_error else None)
    result["cpu_percent"] = cpu.percent if cpu is not None else None
    if len(latencies) < min_ok:
        result["window_note"] = f"stopped at the {max_s:.0f} s cap with fewer than {min_ok} successful requests"
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
