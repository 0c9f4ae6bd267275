"""Live `/analyze` latency beside a background job (scenario `jobs-contention`).

One closed loop of `clients` live clients runs through the whole measurement, each request timed on its own (when
it started, how long it took), so that one run gives two windows of the same load on the same server:

- idle: the service has no job; two spans, one before the job and one after it (so that a machine whose other
  load drifts during the run weighs on both sides alike), each of at least `idle_s / 2` and `min_ok / 2`
  successful requests (at most `max_s / 2`), the first after `warmup_s`;
- during the job: the workload's photos repeated to `job_images`, sent as one zip file to `/jobs/submit`; the
  window runs from the job's `created_at` to its `finished_at` (the server's own clock: the same machine's).

A request counts in a window when it started and finished inside it; the upload of the job itself is in neither.

Every result line of the job is then compared with a synchronous `/analyze` of the same photo on the idle
service, field by field as tests/integration/test_jobs_http.py does (all but `request_id` and `timings_ms`).
"""

from __future__ import annotations

import asyncio
import datetime
import io
import itertools
import json
import time
import zipfile
from pathlib import Path

import httpx

from benchmarks.loadgen import _result
from benchmarks.monitor import CpuWindow

NOT_COMPARED = ("request_id", "timings_ms")


def comparable(analysis: dict) -> dict:
    """What a job's line and a synchronous answer must share: everything but the request's id and timings."""
    return {key: value for key, value in analysis.items() if key not in NOT_COMPARED}


def faces_differ(a: dict, b: dict) -> bool:
    """Whether two answers disagree on what a reader sees: the number of faces, a box (to the pixel) or a label."""
    def seen(analysis):
        return [(tuple(round(v) for v in face["box"].values()),
                 *(face[k]["label"] for k in ("emotion", "gender") if isinstance(face.get(k), dict)))
                for face in analysis["faces"]]
    return seen(a) != seen(b)


def job_archive(images: list[Path], count: int) -> tuple[bytes, list[str]]:
    """A zip of `count` members cycling through `images`, each named `<position>-<photo>`; stored, not deflated
    (JPEGs do not shrink)."""
    buffer, names = io.BytesIO(), []
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for i, path in zip(range(count), itertools.cycle(images)):
            names.append(f"{i:03d}-{path.name}")
            archive.writestr(names[-1], path.read_bytes())
    return buffer.getvalue(), names


def epoch(timestamp: str) -> float:
    """A store timestamp (ISO 8601, UTC) as seconds since the epoch."""
    return datetime.datetime.fromisoformat(timestamp).timestamp()


Sample = tuple[float, float, bool, "str | None"]  # started (time.time()), latency ms, succeeded, error


def window(samples: list[Sample], spans: list[tuple[float, float]]) -> dict:
    """loadgen's result for the requests that started and finished inside one of `spans` (start, end)."""
    inside = [s for s in samples if any(start <= s[0] and s[0] + s[1] / 1e3 <= end for start, end in spans)]
    ok = [latency for _, latency, success, _ in inside if success]
    errors = [error for _, _, success, error in inside if not success]
    result = _result(len(inside), len(errors), sum(end - start for start, end in spans), ok,
                     first_error=errors[0] if errors else None)
    result["load_generator"] = "asyncio closed loop (httpx)"
    return result


def ratio(during: float | None, idle: float | None) -> float | None:
    return round(during / idle, 2) if during is not None and idle else None


async def measure(url: str, images: list[Path], *, clients: int, job_images: int, warmup_s: float, idle_s: float,
                  min_ok: int, max_s: float, server_pids: list[int], poll_s: float = 0.2) -> dict:
    """The two windows, the job's own figures, the comparison of its lines, and the timeline for the plot."""
    payloads = [(path.name, path.read_bytes()) for path in images]
    archive, names = job_archive(images, job_images)
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        expected = {}
        for name, data in payloads:  # on the idle service; also its warm-up
            response = (await http.post("/analyze", files={"image": (name, data, "image/jpeg")})).raise_for_status()
            expected[name] = comparable(response.json())

        samples: list[Sample] = []
        stop = asyncio.Event()
        counter = itertools.count()

        async def client() -> None:
            while not stop.is_set():
                name, data = payloads[next(counter) % len(payloads)]
                started, began = time.time(), time.perf_counter()
                error = None
                try:
                    response = await http.post("/analyze", files={"image": (name, data, "image/jpeg")})
                    if response.status_code != 200:
                        error = f"{response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    error = f"{type(exc).__name__}: {exc}"[:300]
                samples.append((started, (time.perf_counter() - began) * 1e3, error is None, error))

        async def idle_span(cpu: CpuWindow) -> tuple[float, float]:
            """At least idle_s / 2 and min_ok / 2 successes, at most max_s / 2."""
            start = time.time()
            while True:
                await asyncio.sleep(0.05)
                elapsed = time.time() - start
                done = sum(1 for s in samples if s[0] >= start and s[2])
                if elapsed >= max_s / 2 or (elapsed >= idle_s / 2 and done >= min_ok / 2):
                    cpu.stop()
                    return start, time.time()

        loop = asyncio.get_running_loop()
        origin = time.time()
        load = [asyncio.create_task(client()) for _ in range(clients)]
        idle_cpu = CpuWindow(server_pids)
        try:
            await asyncio.sleep(warmup_s)
            idle_cpu.start()
            before = await idle_span(idle_cpu)
            idle_cpu_s, idle_wall_s = idle_cpu.cpu_s, idle_cpu.seconds

            submit_began = loop.time()
            submitted = (await http.post("/jobs/submit", files={
                "archive": ("job.zip", archive, "application/zip")})).raise_for_status().json()
            submit_s = loop.time() - submit_began
            job_cpu = CpuWindow(server_pids)
            job_cpu.start()
            progress = [(time.time(), submitted["done"] + submitted["failed"])]
            while True:
                status = (await http.post("/jobs/status", json={"job_id": submitted["id"]})).raise_for_status().json()
                progress.append((time.time(), status["done"] + status["failed"]))
                if status["state"] != "queued":
                    break
                await asyncio.sleep(poll_s)
            job_cpu.stop()

            idle_cpu.start()
            after = await idle_span(idle_cpu)
            idle_cpu_s, idle_wall_s = idle_cpu_s + idle_cpu.cpu_s, idle_wall_s + idle_cpu.seconds
        finally:
            stop.set()
            await asyncio.gather(*load)

        answer = (await http.post("/jobs/results", json={"job_id": submitted["id"]})).raise_for_status()
    lines = [json.loads(line) for line in answer.text.splitlines() if line]
    job_start, job_end = epoch(status["created_at"]), epoch(status["finished_at"])
    idle, during = window(samples, [before, after]), window(samples, [(job_start, job_end)])
    idle["cpu_percent"] = round(100 * idle_cpu_s / idle_wall_s, 1) if idle_wall_s else None
    during["cpu_percent"] = None  # the service's CPU in that window is the job's too: it is the job's figure below
    failed = [line for line in lines if line["state"] != "done"]
    differ = [line for line in lines if line["state"] == "done"
              and comparable(line["analysis"]) != expected[line["name"].split("-", 1)[1]]]
    seen = [line for line in differ if faces_differ(line["analysis"], expected[line["name"].split("-", 1)[1]])]
    job_s = job_end - job_start
    return {
        "idle": idle,
        "during": during,
        "job": {"images": job_images, "state": status["state"], "done": status["done"], "failed": status["failed"],
                "seconds": round(job_s, 2), "images_per_s": round(status["done"] / job_s, 2) if job_s > 0 else None,
                "submit_s": round(submit_s, 2), "archive_mb": round(len(archive) / 2**20, 1),
                "server_cpu_percent": job_cpu.percent,  # the whole service, live requests and job alike
                "result_lines": len(lines), "names_in_order": [line["name"] for line in lines] == names,
                "mismatches": len(differ) + len(failed), "failed_lines": len(failed),
                "mismatches_seen": len(seen) + len(failed),  # of which a face, a box (to the pixel) or a label
                "first_mismatch": (failed or differ or [{}])[0].get("name")},
        "ratios": {"p50": ratio(during["p50_ms"], idle["p50_ms"]), "p95": ratio(during["p95_ms"], idle["p95_ms"]),
                   "p99": ratio(during["p99_ms"], idle["p99_ms"])},
        "timeline": {"latency": [(round(s[0] - origin, 3), round(s[1], 2)) for s in samples if s[2]],
                     "progress": [(round(t - origin, 3), n) for t, n in progress],
                     "idle": [(round(start - origin, 3), round(end - origin, 3)) for start, end in (before, after)],
                     "job": (round(job_start - origin, 3), round(job_end - origin, 3)),
                     "job_images": job_images},
    }
