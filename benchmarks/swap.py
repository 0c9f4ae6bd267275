"""The hot swap of a face head as a latency trace: emotion promoted from version 1 (mini_XCEPTION .102, 64x64) to
version 2 (the 48x48 .119) and rolled back, through the service under a closed loop of `--clients` clients, on the
embedded backend and on the local Triton (explicit model control, `convert promote --triton-url`). Every request is
timed and keeps the version its answer names; the plot draws each request's latency at the time it was asked,
coloured by that version, the promotion and the rollback marked (from the command's start until the service
answered `POST /models/reload`). The table gives each window's latency and every failure. docs/models.md and
benchmarks/README.md show the last results.

    python -m benchmarks.swap                                    # both backends -> benchmarks/results/<date>-swap/
    python -m benchmarks.swap --backends triton --clients 16 --phase-s 6 --out /tmp/swap

Needs ../shared/fixtures (the .119 artifact) and the built repository; converts version 2 into a temporary copy.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import io
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from PIL import Image

from benchmarks.loadgen import _result
from convert.__main__ import DEFAULT_REPOSITORY
from faceserve.dev import devserver
from faceserve.dev.fixtures import FIXTURES
from faceserve.settings import PROJECT_ROOT

CANDIDATE = "fer2013_mini_XCEPTION.119-0.65.hdf5"
RECIPE = "convert/manifest.toml#emotion_mini_xception_48"
MODELS = ("face_detector", "emotion")
BACKENDS = ("embedded", "triton")

Sample = tuple[float, float, int, "str | None"]  # asked (s since the load began), latency ms, status, emotion's version


def convert(*args: str) -> str:
    """Runs `python -m convert`; its log."""
    done = subprocess.run([sys.executable, "-m", "convert", *args], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"python -m convert {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return done.stderr


def versioned_repository(folder: Path) -> Path:
    """face_detector and emotion as built (real copies), the 48x48 model converted as emotion's version 2."""
    repo = folder / "repo"
    for name in MODELS:
        shutil.copytree(DEFAULT_REPOSITORY / name, repo / name)
    convert("model", str(FIXTURES / "models" / CANDIDATE), "--name", "emotion", "--recipe", RECIPE,
            "--repository", str(repo))
    return repo


async def trace(url: str, image: bytes, clients: int, phase_s: float, switches) -> tuple[list[Sample], list[dict]]:
    """`clients` closed-loop clients on /analyze; `phase_s` of load, then each switch (a coroutine function of the
    client, returning what it measured) followed by `phase_s` more. Returns the samples and each switch's span."""
    samples: list[Sample] = []
    marks: list[dict] = []
    stop = asyncio.Event()
    origin = time.monotonic()
    limits = httpx.Limits(max_connections=clients + 2, max_keepalive_connections=clients + 2)
    async with httpx.AsyncClient(base_url=url, timeout=120, limits=limits) as http:
        async def client() -> None:
            while not stop.is_set():
                asked = time.monotonic()
                try:
                    response = await http.post("/analyze", files={"image": ("grid.jpg", image, "image/jpeg")})
                    status = response.status_code
                    version = response.json()["models"].get("emotion") if status == 200 else None
                except httpx.HTTPError:
                    status, version = 0, None
                samples.append((round(asked - origin, 4), round((time.monotonic() - asked) * 1e3, 2), status,
                                version))

        load = [asyncio.create_task(client()) for _ in range(clients)]
        try:
            await asyncio.sleep(phase_s)
            for switch in switches:
                began = time.monotonic()
                measured = await switch(http)
                marks.append({**measured, "began_s": round(began - origin, 3),
                              "served_s": round(time.monotonic() - origin, 3)})
                await asyncio.sleep(phase_s)
        finally:
            stop.set()
            await asyncio.gather(*load)
    return samples, marks


def switch(args: list[str], name: str):
    """A `convert` command, then POST /models/reload (scope admin; the worker it reaches serves the new version
    at once, the other follows by its watcher)."""
    async def run(http: httpx.AsyncClient) -> dict:
        began = time.monotonic()
        log = await asyncio.to_thread(convert, *args)
        commanded = time.monotonic()
        (await http.post("/models/reload")).raise_for_status()
        triton = re.search(r"holds versions [\d, ]+ \(([\d.]+) s\)", log)
        return {"switch": name, "command_s": round(commanded - began, 2),
                "reload_s": round(time.monotonic() - commanded, 2),
                "triton_load_s": float(triton.group(1)) if triton else None}
    return run


def windows(samples: list[Sample], marks: list[dict], watch_s: float) -> dict[str, dict]:
    """Latency of the requests asked before the promotion, during each switch (from its start until the watchers
    have surely followed), and between/after them."""
    (promote, rollback), end = marks, max(s[0] for s in samples) + 1e-3  # the last request asked included
    spans = {"before": (0.0, promote["began_s"]),
             "promotion": (promote["began_s"], promote["served_s"] + watch_s),
             "version 2": (promote["served_s"] + watch_s, rollback["began_s"]),
             "rollback": (rollback["began_s"], rollback["served_s"] + watch_s),
             "after": (rollback["served_s"] + watch_s, end)}
    out = {}
    for name, (start, stop) in spans.items():
        inside = [s for s in samples if start <= s[0] < stop]
        failed = [s for s in inside if s[2] != 200]
        result = _result(len(inside), len(failed), stop - start, [s[1] for s in inside if s[2] == 200])
        result["versions"] = sorted({s[3] for s in inside if s[3]})
        out[name] = result
    return out


def measure(backend: str, versioned: Path, image: bytes, clients: int, phase_s: float, log_dir: Path) -> dict:
    watch_s = 0.5
    with tempfile.TemporaryDirectory(prefix=f"faceserve-swap-{backend}-") as folder, contextlib.ExitStack() as stack:
        repo = shutil.copytree(versioned, Path(folder) / "repo")
        env = {"FACESERVE_MODEL_REPOSITORY": str(repo), "FACESERVE_MODELS_WATCH_S": str(watch_s)}
        extra: list[str] = []
        if backend == "triton":
            from faceserve.dev.triton_local import LocalTriton
            ports = {k: devserver.free_port() for k in ("http_port", "grpc_port", "metrics_port")}
            triton = stack.enter_context(LocalTriton(repo, **ports))
            env["FACESERVE_BACKEND"] = f"grpc://{triton.grpc_url}"
            extra = ["--triton-url", env["FACESERVE_BACKEND"]]
        server = stack.enter_context(devserver.bentoml_serve(log_dir, env))
        where = ["--repository", str(repo), *extra]
        samples, marks = asyncio.run(trace(server.url, image, clients, phase_s, [
            switch(["promote", "emotion", "2", *where], "promote"), switch(["rollback", "emotion", *where], "rollback")]))
    return {"backend": backend, "clients": clients, "marks": marks, "windows": windows(samples, marks, 2 * watch_s),
            "failed": sum(1 for s in samples if s[2] != 200), "requests": len(samples), "samples": samples}


def plot(results: list[dict], out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, figsize=(12, 3.6 * len(results)), sharex=True, squeeze=False)
    colours = {"emotion:1": "tab:blue", "emotion:2": "tab:orange", None: "tab:red"}
    for ax, result in zip(axes[:, 0], results):
        for version, colour in colours.items():
            points = [(s[0], s[1]) for s in result["samples"] if s[3] == version]
            if points:
                ax.scatter(*zip(*points), s=5, alpha=0.6, color=colour,
                           label=version or f"failed ({len(points)})")
        for mark, colour in zip(result["marks"], ("tab:orange", "tab:blue")):
            ax.axvspan(mark["began_s"], mark["served_s"], color=colour, alpha=0.15)
            ax.axvline(mark["began_s"], color=colour, linestyle="--", linewidth=1)
            ax.annotate(mark["switch"], (mark["began_s"], 1), xycoords=("data", "axes fraction"),
                        xytext=(3, -12), textcoords="offset points", fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("/analyze latency (ms)")
        ax.set_title(f"{result['backend']}: {result['clients']} clients, {result['requests']} requests, "
                     f"{result['failed']} failed")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="upper right")
    axes[-1, 0].set_xlabel("seconds since the load began (shaded: from the command's start to the reload's answer)")
    fig.tight_layout()
    fig.savefig(out / "swap.png", dpi=110)
    plt.close(fig)
    return out / "swap.png"


def table(results: list[dict]) -> str:
    lines = ["| backend | window | requests | failed | req/s | p50 ms | p95 ms | p99 ms | versions answered |",
             "|---|---|---|---|---|---|---|---|---|"]
    for result in results:
        for name, w in result["windows"].items():
            lines.append(f"| {result['backend']} | {name} | {w['requests']} | {w['errors']} | {w['throughput']} | "
                         f"{w['p50_ms']} | {w['p95_ms']} | {w['p99_ms']} | {', '.join(w['versions'])} |")
    lines += ["", "| backend | switch | `convert` command s | of which Triton's load s | `/models/reload` s |",
              "|---|---|---|---|---|"]
    for result in results:
        for mark in result["marks"]:
            lines.append(f"| {result['backend']} | {mark['switch']} | {mark['command_s']} | "
                         f"{'—' if mark['triton_load_s'] is None else mark['triton_load_s']} | {mark['reload_s']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.swap", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--phase-s", type=float, default=5.0, help="load before, between and after the switches")
    parser.add_argument("--out", type=Path,
                        default=PROJECT_ROOT / "benchmarks" / "results" / f"{datetime.date.today()}-swap")
    args = parser.parse_args(argv)
    (args.out / "logs").mkdir(parents=True, exist_ok=True)
    photo = FIXTURES / "images" / "emotion_classification.jpg"
    if not photo.is_file():
        parser.error(f"{FIXTURES} has no images/emotion_classification.jpg: the shared fixtures are needed")
    buffer = io.BytesIO()
    Image.open(photo).convert("RGB").save(buffer, "JPEG", quality=92)  # as the tests send it
    image = buffer.getvalue()
    with tempfile.TemporaryDirectory(prefix="faceserve-swap-") as folder:
        versioned = versioned_repository(Path(folder))
        results = [measure(backend, versioned, image, args.clients, args.phase_s, args.out / "logs")
                   for backend in args.backends]
    (args.out / "swap.json").write_text(json.dumps(results))
    plot(results, args.out)
    (args.out / "swap.md").write_text(table(results) + "\n")
    print(table(results))
    return 0 if all(r["failed"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
