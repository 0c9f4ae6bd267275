"""Soak: thousands of mixed good and bad requests at concurrency 32 against a running service.

    python -m benchmarks.soak --url http://127.0.0.1:3000 --requests 3000 --concurrency 32
    python -m benchmarks.soak --requests 3000          # starts its own `bentoml serve`

Every request must get an answer (no transport error), every good one correctly
(one face, happy; a PNG for rotate), every bad one with its 4xx and code, no 5xx
and no overload answer at all, and the server's resident memory (its whole process
tree), sampled after each round, must be readable and stop growing: the second half
of the rounds may add at most 40 MiB (the first rounds are where onnxruntime's
arenas and the allocators grow to full concurrency). Memory that cannot be sampled
(a server on another host, no permission) fails the soak rather than passing it.
Prints one JSON report with the list of `failures`; exits 1 if it is not empty.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import random
import sys
import time
from urllib.parse import urlparse

import httpx
import numpy as np
import psutil
from PIL import Image


def _images() -> dict[str, bytes]:
    from skimage import data
    buffer = io.BytesIO()
    Image.fromarray(data.astronaut()).save(buffer, "JPEG", quality=90)
    good = buffer.getvalue()
    return {"good": good, "truncated": good[: len(good) // 2],
            "random": np.random.default_rng(1).integers(0, 256, 2048, dtype=np.uint8).tobytes()}


def _mix(images: dict[str, bytes]) -> list[tuple[str, str, dict, tuple[int, str]]]:
    """(kind, endpoint, httpx kwargs, expected (status, code or 'face'/'png'))."""
    good_b64 = base64.b64encode(images["good"]).decode()
    upload = {"files": {"image": ("a.jpg", images["good"], "image/jpeg")}}
    return [
        ("good", "analyze", upload, (200, "face")),
        ("good", "analyze", {"json": {"image_base64": good_b64}}, (200, "face")),
        ("good", "rotate", {"json": {"image_base64": good_b64, "degrees": 180}}, (200, "png")),
        ("bad", "analyze", {"files": {"image": ("t.jpg", images["truncated"], "image/jpeg")}}, (400, "invalid_image")),
        ("bad", "analyze", {"files": {"image": ("r.bin", images["random"], "image/png")}}, (400, "invalid_image")),
        ("bad", "analyze", {"json": {"image_base64": "%%% not base64"}}, (400, "invalid_base64")),
        ("bad", "rotate", {"json": {"image_base64": good_b64, "degrees": 45}}, (422, "invalid_rotation")),
        ("bad", "classify", {"json": {"image_base64": good_b64, "top_k": 0}}, (422, "top_k_out_of_range")),
        ("bad", "analyze", {"json": {"image_base64": 7}}, (400, "invalid_request")),
    ]


def server_rss_mib(url: str) -> float | None:
    """Resident memory of the process tree serving `url` (the `bentoml serve` and its workers)."""
    port = urlparse(url).port
    try:
        pids = {c.pid for c in psutil.net_connections("tcp")
                if c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN and c.pid}
    except psutil.AccessDenied:
        return None
    roots = set()
    for pid in pids:
        process = psutil.Process(pid)
        while process.parent() and "bentoml" in " ".join(process.parent().cmdline()):
            process = process.parent()
        roots.add(process)
    total = 0
    for root in roots:
        for process in [root, *root.children(recursive=True)]:
            try:
                total += process.memory_info().rss
            except psutil.NoSuchProcess:
                pass
    return total / 2**20 if roots else None


def _correct(response: httpx.Response, expected: tuple[int, str]) -> bool:
    status, what = expected
    if response.status_code != status:
        return False
    if what == "face":
        faces = response.json()["faces"]
        return len(faces) == 1 and faces[0]["emotion"]["label"] == "happy"
    if what == "png":
        return response.content[:8] == b"\x89PNG\r\n\x1a\n"
    return response.json().get("error") == what


async def _run(url: str, requests: int, concurrency: int, headers: dict[str, str]) -> dict:
    mix = _mix(_images())
    rng = random.Random(0)
    plan = [rng.choice(mix) for _ in range(requests)]
    counts = {"requests": requests, "concurrency": concurrency, "good": 0, "good_ok": 0, "bad": 0, "bad_ok": 0,
              "server_errors": 0, "overloaded": 0, "wrong_answers": 0, "transport_errors": 0}
    wrong: list[str] = []
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits, headers=headers) as client:
        for kind, endpoint, kwargs, expected in mix * 3:  # warm-up
            await client.post(f"/{endpoint}", **kwargs)
        counts["rss_start_mib"] = server_rss_mib(url)
        semaphore = asyncio.Semaphore(concurrency)

        async def one(kind, endpoint, kwargs, expected):
            async with semaphore:
                try:
                    response = await client.post(f"/{endpoint}", **kwargs)
                except httpx.HTTPError as exc:
                    counts["transport_errors"] += 1
                    wrong.append(f"{endpoint}: {type(exc).__name__}")
                    return
            counts[kind] += 1
            if response.status_code in (429, 503) and response.headers.get("retry-after"):
                counts["overloaded"] += 1
            elif response.status_code >= 500:
                counts["server_errors"] += 1
                wrong.append(f"{endpoint}: {response.status_code} {response.text[:200]}")
            elif _correct(response, expected):
                counts[f"{kind}_ok"] += 1
            else:
                counts["wrong_answers"] += 1
                wrong.append(f"{endpoint} expected {expected}: {response.status_code} {response.text[:200]}")

        # In rounds, memory sampled after each: growth must stop once allocators have seen full concurrency.
        rounds = max(2, min(8, requests // 250))
        samples = []
        started = time.perf_counter()
        for index in range(rounds):
            await asyncio.gather(*(one(*item) for item in plan[index::rounds]))
            samples.append(server_rss_mib(url))
        counts["seconds"] = round(time.perf_counter() - started, 2)
        counts["requests_per_s"] = round(requests / counts["seconds"], 1)
        counts["rss_mib_per_round"] = [None if v is None else round(v, 1) for v in samples]
        counts["rss_end_mib"] = samples[-1]
        if None not in samples:
            half = samples[len(samples) // 2 - 1] if len(samples) > 2 else samples[0]
            counts["rss_growth_second_half_mib"] = round(samples[-1] - half, 1)
        ready = await client.get("/readyz")
        counts["ready_after"] = ready.status_code == 200
    counts["examples_of_wrong"] = wrong[:5]
    return counts


def memory_stable(report: dict, tolerance_mib: float = 40.0) -> bool:
    """Resident memory was sampled after every round and the second half of the rounds added at most
    `tolerance_mib`. Unsampled memory is not stable: nothing shows that it is."""
    samples = report.get("rss_mib_per_round") or []
    growth = report.get("rss_growth_second_half_mib")
    return bool(samples) and None not in samples and growth is not None and growth <= tolerance_mib


def verdict(report: dict, tolerance_mib: float | None = 40.0) -> list[str]:
    """Every way the soak failed, one line each; empty when it passed. With `tolerance_mib=None` memory
    must still be sampled after every round, but its growth is not judged."""
    failures = []
    for counter in ("transport_errors", "server_errors", "overloaded", "wrong_answers"):
        if report.get(counter, 0):
            failures.append(f"{counter}: {report[counter]}")
    if report["good_ok"] != report["good"]:
        failures.append(f"good requests answered correctly: {report['good_ok']} of {report['good']}")
    if report["bad_ok"] != report["bad"]:
        failures.append(f"bad requests answered with their 4xx and code: {report['bad_ok']} of {report['bad']}")
    answered = report["good"] + report["bad"] + report.get("transport_errors", 0)
    if answered != report["requests"]:
        failures.append(f"requests accounted for: {answered} of {report['requests']}")
    if not report.get("ready_after"):
        failures.append("not ready after the soak")
    samples = report.get("rss_mib_per_round") or []
    if not samples or None in samples:
        failures.append(f"server memory could not be sampled after every round: {samples}")
    elif tolerance_mib is not None and not memory_stable(report, tolerance_mib):
        failures.append(f"memory grew {report.get('rss_growth_second_half_mib')} MiB in the second half "
                        f"(at most {tolerance_mib})")
    return failures


def soak(url: str, requests: int = 3000, concurrency: int = 32, headers: dict[str, str] | None = None) -> dict:
    return asyncio.run(_run(url, requests, concurrency, headers or {}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a running service; without it one is started")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--api-key")
    args = parser.parse_args(argv)
    headers = {"X-API-Key": args.api_key} if args.api_key else {}
    if args.url:
        report = soak(args.url, args.requests, args.concurrency, headers)
    else:
        sys.path.insert(0, ".")
        from tests.support import serve
        with serve() as url:
            report = soak(url, args.requests, args.concurrency, headers)
    report["failures"] = verdict(report)
    print(json.dumps(report, indent=2))
    return 1 if report["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
