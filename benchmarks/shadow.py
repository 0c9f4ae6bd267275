"""What a shadow costs, per model: one process serving a copy of the built repository's face models (detector, face
mesh, emotion, gender, age) to 16 concurrent callers on the labelled detection photos and the emotion grid, windows
without a trial and with the model's candidate shadowed taking turns, and each version's call time from the trial's
own records. The candidates are converted into the copy first (`convert model`); nothing is written to the built
repository. The table of docs/models.md ("Trying a candidate on live traffic").

    python -m benchmarks.shadow               # emotion (.119 48x48) and gender (gender_mini_XCEPTION)
    python -m benchmarks.shadow --windows 3 --seconds 4
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from convert.__main__ import DEFAULT_REPOSITORY
from faceserve.dev.fixtures import FIXTURES
from faceserve.dev.photos import fixture
from faceserve.models.repository import model_file
from faceserve.models.rollout import SHADOW, start_trial, stop_trial
from faceserve.models.versions import version_spec
from faceserve.pipeline import imaging
from faceserve.services import Services
from faceserve.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
SERVED = ("face_detector", "faceboxes", "face_landmarks", "emotion", "gender", "age")
CANDIDATES = {"emotion": ("fer2013_mini_XCEPTION.119-0.65.hdf5", "emotion_mini_xception_48"),
              "gender": ("gender_mini_XCEPTION.21-0.95.hdf5", "gender_mini_xception")}
CLIENTS = 16


def photo_set() -> dict[str, bytes]:
    photo_bytes = {path.stem: path.read_bytes() for path in sorted((FIXTURES / "detection").glob("*.jpg"))}
    grid = fixture("emotion_classification.jpg")
    photo_bytes["emotion_grid"] = imaging.encode(grid, "jpeg")
    return photo_bytes


def prepared(folder: Path) -> Path:
    repo = folder / "repo"
    for name in SERVED:
        if (DEFAULT_REPOSITORY / name).is_dir():
            shutil.copytree(DEFAULT_REPOSITORY / name, repo / name)
    for model, (artifact, recipe) in CANDIDATES.items():
        subprocess.run([sys.executable, "-m", "convert", "model", str(FIXTURES / "models" / artifact), "--name", model,
                        "--recipe", f"{ROOT / 'convert' / 'manifest.toml'}#{recipe}", "--repository", str(repo)],
                       cwd=ROOT, check=True, capture_output=True)
    return repo


async def window(services: Services, decoded: dict, photo_bytes: dict,
                 seconds: float) -> tuple[float, float, list]:
    """Requests per second over `seconds` of 16 callers, this process's CPU milliseconds per request (what other
    jobs on the machine disturb least), and the trials' comparisons of its answers."""
    names, done, compared = list(decoded), [0], []  # answers remembered as the service does (the trials' rows too)
    deadline = time.monotonic() + seconds

    async def client(offset: int):
        i = offset
        while time.monotonic() < deadline:
            name = names[i % len(names)]
            analysis = await services.analysis.analyze_decoded("client:bench", decoded[name], photo_bytes[name],
                                                               None, False)
            compared.extend(analysis.comparisons)
            done[0] += 1
            i += 1
    started, cpu = time.monotonic(), time.process_time()
    await asyncio.gather(*(client(offset) for offset in range(CLIENTS)))
    return done[0] / (time.monotonic() - started), (time.process_time() - cpu) * 1e3 / done[0], compared


def ms_per_face(model_dir: Path, version: int, rows: int = 8, seconds: float = 1.0) -> float:
    """The version's model alone: CPU ms per face at a batch of `rows` (one intra-op thread, as the service runs)."""
    spec = version_spec(model_dir, version)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    session = ort.InferenceSession(str(model_file(model_dir, version)), options, providers=["CPUExecutionProvider"])
    batch = np.random.default_rng(0).uniform(-1, 1, (rows, *spec.input_shape)).astype(np.float32)
    session.run(None, {spec.input_name: batch})
    calls, cpu, deadline = 0, time.process_time(), time.monotonic() + seconds
    while time.monotonic() < deadline:
        session.run(None, {spec.input_name: batch})
        calls += 1
    return (time.process_time() - cpu) * 1e3 / (calls * rows)


async def measure(repo: Path, windows: int, seconds: float) -> None:
    settings = dataclasses.replace(Settings.from_env(), repository=repo, models_watch_s=0,
                                   store=f"sqlite:///{repo.parent / 'faceserve.db'}")
    services = Services.build(settings)
    photo_bytes = photo_set()
    decoded = {name: imaging.decode(data) for name, data in photo_bytes.items()}
    print(f"| model shadowed (candidate) | req/s without → with the shadow (median of {windows} windows of "
          f"{seconds:g} s each, c={CLIENTS}) | ratio | CPU ms per request without → with | serving version's call, "
          f"ms mean / p95 | candidate's call | model alone, CPU ms per face at batch 8: serving → candidate |")
    print("|---|---|---|---|---|---|---|")
    try:
        await services.resources.start()
        await window(services, decoded, photo_bytes, 2.0)  # warm (sessions, caches, the store's schema)
        for model, (artifact, _) in CANDIDATES.items():
            rates, cpu = {"without": [], "with": []}, {"without": [], "with": []}
            compared = []
            for _ in range(windows):
                for state in ("without", "with"):
                    if state == "with":
                        start_trial(repo / model, SHADOW, 2)
                    await services.resources.reload()
                    rate, cpu_ms, seen = await window(services, decoded, photo_bytes, seconds)
                    rates[state].append(rate)
                    cpu[state].append(cpu_ms)
                    compared += seen
                    if state == "with":
                        stop_trial(repo / model)
            without, with_ = statistics.median(rates["without"]), statistics.median(rates["with"])
            serving = sorted(c.serving_ms for c in compared)
            candidate = sorted(c.candidate_ms for c in compared)
            cpu_without, cpu_with = statistics.median(cpu["without"]), statistics.median(cpu["with"])
            print(f"| {model} ({artifact}) | {without:.1f} → {with_:.1f} | {with_ / without:.2f}× | "
                  f"{cpu_without:.1f} → {cpu_with:.1f} (+{cpu_with - cpu_without:.1f}) | "
                  f"{statistics.fmean(serving):.1f} / {serving[int(0.95 * len(serving))]:.1f} | "
                  f"{statistics.fmean(candidate):.1f} / {candidate[int(0.95 * len(candidate))]:.1f} | "
                  f"{ms_per_face(repo / model, 1):.2f} → {ms_per_face(repo / model, 2):.2f} |", flush=True)
            await services.resources.reload()
    finally:
        await services.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.shadow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--windows", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as folder:
        asyncio.run(measure(prepared(Path(folder)), args.windows, args.seconds))


if __name__ == "__main__":
    main()
