"""python -m benchmarks [--quick] [--scenarios NAME ...] [--workload NAME ...] [--out DIR]
                     [--concurrency C ...] [--duration S] [--job-images N]
                     [--peer-embeddings MODEL ...]

Runs every named scenario side by side on the same photos and models, then writes
<out>/results.json, <out>/report.md, <out>/throughput.png and <out>/p99.png.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import logging
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

from tqdm import tqdm

from benchmarks import report, workload
from benchmarks.scenarios import OPT_IN, SCENARIOS, runs_in, unusable
from benchmarks.sweeps import Config, Context, Skip

HERE = Path(__file__).resolve().parent
WORKLOADS = ("single", "sizes", "webcam", "group", "multi", "mixed", "traffic")

# Quick is quick by design: two concurrencies, one head, one seed worker. Its windows still hold enough
# answers to mean something on a slow machine (the seed answers in ~1 s at c=16 there): each lasts at least
# 3 s and until 20 requests succeeded.
QUICK = Config(concurrencies=(1, 16), warmup_s=1.0, duration_s=3.0, heads=("emotion",),
               head_concurrencies=(32,), head_duration_s=3.0, seed_workers=1, seed_threads=4,
               min_ok=20, max_window_s=60.0, job_images=20)
FULL = Config(concurrencies=(1, 4, 16, 32, 64), warmup_s=2.0, duration_s=8.0,
              heads=("emotion", "gender", "age"), head_concurrencies=(1, 4, 16, 32, 64), head_duration_s=4.0,
              seed_workers=2, seed_threads=4, min_ok=100, max_window_s=120.0, job_images=500)


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        model = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
        cpu = model
    except (OSError, StopIteration):
        pass
    text = f"{os.cpu_count()} CPU ({cpu}), Python {platform.python_version()}"
    if shutil.which("nvidia-smi"):
        gpu = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True,
                             text=True).stdout.strip()
        if gpu:
            text += f", GPU: {gpu}"
    return text


def face_finder():
    """`find(rgb, detector) -> [box, ...]` (detector None: the default) for `workload.build`, and its closer."""
    from faceserve.services import Services
    services = Services.build()
    loop = asyncio.new_event_loop()
    loop.run_until_complete(services.resources.start())

    def find(image, detector: str | None) -> list[tuple[float, float, float, float]]:
        return [d.box for d in loop.run_until_complete(services.resources.pipeline.detect(image, detector))]
    return find, lambda: (loop.run_until_complete(services.close()), loop.close())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: c in (1, 16), one head, >= 3 s per point")
    parser.add_argument("--scenarios", nargs="+", choices=list(SCENARIOS),
                        default=[name for name in SCENARIOS if name not in OPT_IN],
                        help=f"default: all but {', '.join(sorted(OPT_IN))}")
    parser.add_argument("--workload", nargs="+", choices=WORKLOADS, default=["single"],
                        help="the workloads the load scenarios sweep, each reported in rows of its own")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<date>")
    parser.add_argument("--concurrency", type=int, nargs="+", default=None,
                        help="override the concurrency sweep (service and heads scenarios alike)")
    parser.add_argument("--duration", type=float, default=None, help="override the least measured seconds per point")
    parser.add_argument("--job-images", type=int, default=None,
                        help="jobs-contention's job size (default 500; quick: 20)")
    parser.add_argument("--peer-embeddings", nargs="+", default=None, metavar="MODEL",
                        help="peer: the repository's embedding models measured beside face_recognition, e.g. "
                             "faceres embedding_dlib (default: the one served)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

    cfg = QUICK if args.quick else FULL
    if args.concurrency:
        cfg = dataclasses.replace(cfg, concurrencies=tuple(args.concurrency),
                                  head_concurrencies=tuple(args.concurrency))
    if args.duration:
        cfg = dataclasses.replace(cfg, duration_s=args.duration, head_duration_s=args.duration)
    if args.job_images:
        cfg = dataclasses.replace(cfg, job_images=args.job_images)
    if args.peer_embeddings:
        cfg = dataclasses.replace(cfg, peer_embeddings=tuple(args.peer_embeddings))
    out = (args.out or HERE / "results" / datetime.date.today().isoformat()).resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    find, close = face_finder()
    workloads = workload.build(out / "images", find)
    close()
    missing = [name for name in args.workload if name not in workloads]
    if missing:
        parser.error(f"workload {', '.join(missing)} needs the shared fixtures' group photos; have {list(workloads)}")

    total = sum(runs_in(name, cfg, tuple(args.workload)) for name in args.scenarios)
    bar = tqdm(total=total, unit="run", dynamic_ncols=True, file=sys.stderr)
    ctx = Context(cfg, workloads, args.workload[0], out, advance=lambda what: (bar.set_postfix_str(what), bar.update()),
                  swept=tuple(args.workload))
    rows, scenarios = [], {}
    started = time.perf_counter()
    with ctx.stack:
        for name in args.scenarios:
            bar.set_description(name)
            before = bar.n
            t0 = time.perf_counter()
            try:
                produced = SCENARIOS[name](ctx)
                rows += produced
                scenarios[name] = {"status": "ran", "seconds": round(time.perf_counter() - t0, 1)}
                if reason := unusable(produced):
                    scenarios[name].update(status="failed", reason=reason)
                    tqdm.write(f"[{name}] failed: {reason}", file=sys.stderr)
            except Skip as exc:
                scenarios[name] = {"status": "skipped", "reason": str(exc)}
                tqdm.write(f"[{name}] skipped: {exc}", file=sys.stderr)
            except Exception as exc:  # a scenario's failure is reported, the others still run
                (out / "logs" / f"{name}.traceback.txt").write_text(traceback.format_exc())
                scenarios[name] = {"status": "failed", "reason": f"{type(exc).__name__}: {exc}"[:500]}
                tqdm.write(f"[{name}] failed: {type(exc).__name__}: {exc} (see logs/{name}.traceback.txt)",
                           file=sys.stderr)
            scenarios[name]["info"] = ctx.info.get(name, {})
            bar.update(runs_in(name, cfg, tuple(args.workload)) - (bar.n - before))  # skipped runs still move the bar
    bar.close()

    result = {
        "meta": {"date": datetime.datetime.now().isoformat(timespec="seconds"),
                 "command": "python -m benchmarks " + " ".join(argv if argv is not None else sys.argv[1:]),
                 "machine": machine(), "quick": args.quick, "workload": " ".join(args.workload),
                 "workload_files": sum(len(workloads[name].files) for name in args.workload),
                 "workloads": {k: {"files": [f.name for f in w.files], "faces": w.faces} for k, w in workloads.items()},
                 "config": cfg.__dict__, "elapsed_s": round(time.perf_counter() - started, 1)},
        "scenarios": scenarios,
        "servers": {k: v for k, v in ctx.info.items() if k.startswith("triton(")},
        "rows": rows,
    }
    report.write(result, out)
    print((out / "report.md").read_text())
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
