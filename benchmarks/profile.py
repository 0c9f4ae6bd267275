"""python -m benchmarks.profile [--concurrency C ...] [--duration S] [--workload NAME] [--out DIR]

Where the CPU time of a request goes, in the service and in process, under the benchmark's own load: py-spy samples
every process of `bentoml serve` (each worker by pid) while Locust runs the closed loop, and the in-process loop
(`benchmarks.profile inprocess-loop`, the `inprocess` scenario's call) in a process of its own; each profile is
written as py-spy's collapsed stacks (`<run>.txt`: speedscope.app and flamegraph.pl open them), and every sample is
put in one stage (`STAGES`: the first whose frames it holds, ours or the framework's) to give
`stages.md`/`stages.json`: ms of CPU per request by stage, service beside in-process.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

from benchmarks import loadgen, workload
from benchmarks.local_scenarios import run_on_service_loop
from benchmarks.monitor import CpuWindow

RATE_HZ = 97  # py-spy's samples per second per process (prime: no lock-step with a periodic timer)

# A sample belongs to the first of SUBTREES any of its frames matches (work below one of our calls is that call's,
# whoever's code runs it); else to the first of LEAVES matched walking from its leaf frame up (a wrapper's frame,
# a middleware's say, is in every stack below it: only where it is the innermost known frame is the time its own).
# Frames are py-spy's "function (file)".
SUBTREES: tuple[tuple[str, str], ...] = (
    ("models: onnxruntime run", r"^run \(.*faceserve/backends/onnx\.py|onnxruntime/"),
    ("image decode (ours)", r"\(.*faceserve/pipeline/imaging\.py"),
    ("remembered answers: queue, writer thread, SQLite (ours)", r"\(.*faceserve/(feedback|store|services/feedback)"),
    ("pipeline Python: crops, decoding, quality, schema (ours)", r"\(.*faceserve/(pipeline|models|services)/"),
    ("upload guard's multipart parse (ours)", r"^(_check|_parse|on_\w+|_check_charset) \(.*upload_guard\.py"),
    ("request parsing: BentoML's multipart, temp file, pydantic input",
     r"^(parse_request|from_http_request|NamedTemporaryFile|release) \(|formparsers\.py"),
    ("response encoding: BentoML's serde, pydantic JSON", r"^(serialize\w*|to_http_response|model_dump\w*) \("),
)
LEAVES: tuple[tuple[str, str], ...] = (
    ("other middlewares: access, error shape, headers, limits (ours)", r"\(.*faceserve/http/"),
    ("batcher (ours)", r"\(.*faceserve/backends/"),
    ("OpenTelemetry spans (BentoML)", r"opentelemetry/"),
    ("metrics and access log (BentoML)", r"(prometheus|instruments\.py|/access\.py|logging/)"),
    ("BentoML request path, other (signature, routing, context)",
     r"(bentoml|_bentoml_impl|_bentoml_sdk|starlette|pydantic|inspect\.py|pathlib\.py|tempfile\.py)"),
    ("uvicorn, httptools", r"(uvicorn|httptools|h11)/"),
    ("event loop and thread hand-offs (asyncio, executor)", r"(asyncio/|uvloop|concurrent/futures|threading\.py|"
                                                             r"selectors\.py)"),
)
OTHER = "other"
# Leaf frames where a thread waits (py-spy counts a thread that the loaded machine has not yet run as active):
# left out of the shares, reported apart.
WAITING = re.compile(r"^(_worker \(concurrent/futures/thread\.py\)|run \(asyncio/runners\.py|"
                     r"_block \(.*faceserve/store/sqlite\.py|wait \(threading\.py|select \(selectors\.py)")
STAGE_NAMES = [name for name, _ in SUBTREES + LEAVES] + [OTHER]


def stage_of(frames: list[str]) -> str | None:
    """The stage of one sample's stack (root first); None for a thread waiting."""
    if WAITING.search(frames[-1]):
        return None
    for stage, pattern in _SUBTREES:
        if any(pattern.search(frame) for frame in frames):
            return stage
    for frame in reversed(frames):
        for stage, pattern in _LEAVES:
            if pattern.search(frame):
                return stage
    return OTHER


_SUBTREES = [(stage, re.compile(pattern)) for stage, pattern in SUBTREES]
_LEAVES = [(stage, re.compile(pattern)) for stage, pattern in LEAVES]


def read_collapsed(path: Path) -> collections.Counter:
    """py-spy's raw output: `frame;frame;...;leaf count` per distinct stack."""
    stacks: collections.Counter = collections.Counter()
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks[stack] += int(count)
    return stacks


def stage_shares(profiles: list[Path]) -> tuple[dict[str, float], float]:
    """Each stage's share of the samples of every profile of one run, threads waiting left out; and the share of
    those waiting."""
    samples: collections.Counter = collections.Counter()
    for path in profiles:
        for stack, count in read_collapsed(path).items():
            samples[stage_of(stack.split(";"))] += count
    waiting = samples.pop(None, 0)
    working = sum(samples.values()) or 1
    return ({stage: count / working for stage, count in samples.items()},
            waiting / (working + waiting))


def summary(where: str, concurrency: int, result: dict, profiles: list[Path]) -> dict:
    """A run's figures, its stages in ms of CPU per request: each stage's share of the samples times the CPU time
    psutil measured per request over the load's window."""
    shares, waiting = stage_shares(profiles)
    cpu_ms = _cpu_ms(result)
    return {"where": where, "concurrency": concurrency, "throughput": result["throughput"],
            "p50_ms": result["p50_ms"], "p99_ms": result["p99_ms"], "cpu_percent": result["cpu_percent"],
            "cpu_ms_per_request": cpu_ms, "waiting_share": round(waiting, 3), "profiles": [p.name for p in profiles],
            "stages_ms": {stage: round(share * (cpu_ms or 0), 3) for stage, share in shares.items()}}


def record(pids: list[int], seconds: float, out: Path, name: str) -> list[tuple[subprocess.Popen, Path]]:
    """One `py-spy record` per pid, running for `seconds`, writing `<name>-<pid>.txt`."""
    spy = Path(sys.executable).with_name("py-spy")
    started = []
    for pid in pids:
        path = out / f"{name}-pid{pid}.txt"
        started.append((subprocess.Popen([str(spy), "record", "--pid", str(pid), "--rate", str(RATE_HZ),
                                          "--duration", str(round(seconds)), "--format", "raw", "--nolineno",
                                          "--nonblocking", "--output", str(path)],
                                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE), path))
    return started


def finished(recordings: list[tuple[subprocess.Popen, Path]]) -> list[Path]:
    paths = []
    for process, path in recordings:
        _, err = process.communicate(timeout=120)
        if process.returncode != 0 or not path.exists():
            raise RuntimeError(f"py-spy failed for {path.name}: {err.decode()[-500:]}")
        paths.append(path)
    return paths


def _workers(server_pid: int) -> list[int]:
    """The `bentoml serve` tree's Python processes that serve requests (the workers, not the supervisor)."""
    import psutil
    tree = psutil.Process(server_pid).children(recursive=True)
    return [p.pid for p in tree if "python" in p.name().lower() or "bentoml" in " ".join(p.cmdline())]


def profile_service(images: list[Path], concurrency: int, warmup_s: float, duration_s: float, out: Path,
                    server) -> dict:
    workers = _workers(server.pid)
    result: dict = {}

    def load():
        result.update(loadgen.run_locust(server.url, images, concurrency, warmup_s, duration_s, out / "locust",
                                         label=f"service-c{concurrency}", min_ok=1, max_s=duration_s + 5,
                                         server_pids=[server.pid]))
    thread = threading.Thread(target=load)
    thread.start()
    time.sleep(warmup_s + 1.5)  # Locust's start and spawning, then its warm-up
    recordings = record(workers, duration_s, out, f"service-c{concurrency}")
    thread.join()
    return summary("service", concurrency, result, finished(recordings))


def profile_inprocess(images: list[Path], concurrency: int, warmup_s: float, duration_s: float, out: Path) -> dict:
    written = out / f"inprocess-c{concurrency}.json"
    opened = out / f"inprocess-c{concurrency}.opened"
    loop = subprocess.Popen([sys.executable, "-m", "benchmarks.profile", "inprocess-loop", str(concurrency),
                             str(warmup_s), str(duration_s + 1), str(written), str(opened), *map(str, images)])
    while not opened.exists():  # models loaded, warm-up done: the loop's window is open
        if loop.poll() is not None:
            raise RuntimeError(f"the in-process loop ended with {loop.returncode} before its window")
        time.sleep(0.1)
    opened.unlink()
    recordings = record([loop.pid], duration_s, out, f"inprocess-c{concurrency}")
    profiles = finished(recordings)
    loop.wait(timeout=300)
    result = json.loads(written.read_text())
    written.unlink()
    return summary("inprocess", concurrency, result, profiles)


def _cpu_ms(result: dict) -> float | None:
    if not result.get("cpu_percent") or not result.get("throughput"):
        return None
    return round(result["cpu_percent"] * 10 / result["throughput"], 2)


class _Announced(CpuWindow):
    """A CPU window that also says, by creating `opened`, when it starts."""

    def __init__(self, pids: list[int], opened: Path):
        super().__init__(pids)
        self.opened = opened

    def start(self) -> None:
        super().start()
        self.opened.touch()


def inprocess_loop(concurrency: int, warmup_s: float, duration_s: float, written: Path, opened: Path,
                   images: list[Path]) -> None:
    """The `inprocess` scenario's closed loop (decode, then the pipeline with the default detector), its window
    announced by creating `opened`."""
    import os

    from faceserve.services import Services

    async def main():
        services = Services.build()
        await services.resources.start()

        async def call(i: int):
            pixels = await services.images.image(upload=images[i % len(images)])
            await services.resources.pipeline.analyze(pixels)
        result = await loadgen.closed_loop(call, concurrency, warmup_s, duration_s,
                                           cpu=_Announced([os.getpid()], opened))
        await services.close()
        return result
    written.write_text(json.dumps(run_on_service_loop(main())))


def markdown(runs: list[dict], meta: dict) -> str:
    stages = STAGE_NAMES
    columns = [f"{r['where']} c={r['concurrency']}" for r in runs]
    lines = [f"# Where a request's CPU goes — {meta['date']}", "",
             f"Command: `{meta['command']}`  ", f"Workload: `{meta['workload']}`; py-spy at {RATE_HZ} Hz, "
             f"{meta['duration_s']} s per run, every worker by pid (`*.txt`: collapsed stacks, open them in "
             "speedscope.app).", "",
             "| | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns),
             "| req/s | " + " | ".join(f"{r['throughput']:.1f}" for r in runs) + " |",
             "| p50 / p99 ms | " + " | ".join(f"{r['p50_ms']} / {r['p99_ms']}" for r in runs) + " |",
             "| CPU ms per request (psutil) | " + " | ".join(str(r["cpu_ms_per_request"]) for r in runs) + " |",
             "| samples of threads waiting (left out) | " + " | ".join(
                 f"{r['waiting_share']:.0%}" for r in runs) + " |",
             "| **CPU ms per request, by stage** | " + " | ".join("" for r in runs) + " |"]
    for stage in stages:
        if any(stage in r["stages_ms"] for r in runs):
            lines.append(f"| {stage} | " + " | ".join(f"{r['stages_ms'].get(stage, 0):.2f}" for r in runs) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "inprocess-loop":
        c, warm, duration, written, opened, *images = argv[1:]
        inprocess_loop(int(c), float(warm), float(duration), Path(written), Path(opened), [Path(i) for i in images])
        return 0
    if argv and argv[0] == "restage":  # the stages of a run's profiles again, after STAGES changed
        out = Path(argv[1])
        recorded = json.loads((out / "stages.json").read_text())
        recorded["runs"] = [summary(r["where"], r["concurrency"], r, [out / name for name in r["profiles"]])
                            for r in recorded["runs"]]
        write(out, recorded["runs"], recorded["meta"])
        return 0
    import datetime

    from benchmarks.__main__ import face_finder
    from faceserve.dev import devserver

    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--workload", default="single")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--env", nargs="*", default=[], help="NAME=VALUE for the served service (A/B runs)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    find, close = face_finder()
    images = workload.build(out / "images", find)[args.workload].files
    close()
    runs = []
    env = dict(item.split("=", 1) for item in args.env)
    with devserver.bentoml_serve(out / "logs", env) as server:
        for c in args.concurrency:
            runs.append(profile_service(images, c, args.warmup, args.duration, out, server))
    for c in args.concurrency:
        runs.append(profile_inprocess(images, c, args.warmup, args.duration, out))
    meta = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "workload": args.workload,
            "duration_s": args.duration, "env": env,
            "command": "python -m benchmarks.profile " + " ".join(argv)}
    write(out, runs, meta)
    return 0


def write(out: Path, runs: list[dict], meta: dict) -> None:
    (out / "stages.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2))
    (out / "stages.md").write_text(markdown(runs, meta))
    print((out / "stages.md").read_text())


if __name__ == "__main__":
    sys.exit(main())
