"""python -m benchmarks.search [--sizes N ...] [--million] [--out DIR]

Search per face at growing gallery sizes, exact (`similarity.py`) against the saved approximate index (`ann.py`),
through the gallery's own index over a real SQLite store: recall@1 of the approximate path against exact search,
ms per face of each, the build time, and a worker's warm start (a new process opening the store and the saved
index, to its first answer) with its memory (RSS, and USS: what is its own, not shared with other workers). The
worker that builds the index (in the background) searches the probes one after another while it runs: their
latencies beside exact search's with no build running, and whether they got exact search's top-1.
Writes <out>/results.json, <out>/report.md and <out>/search.png.

The galleries are synthetic, made from real embeddings: FaceRes embeddings of every face of the shared fixtures'
photos (about 100 faces; `real_embeddings`). Identity i is unit(real[i mod R] + 1.2 * sd * noise), sd the real
embeddings' per-dimension spread and noise standard normal: two identities made from one real face are at cosine
0.5 or so (lookalikes, below the shipped threshold), others at 0.25, so the gallery is 100 clusters of lookalikes.
A probe of identity i is unit(identity_i + 1.02 * sd * noise), at cosine about 0.78 to it (a same-person photo).
Recall@1: the share of probes whose best identity is the one exact search over the same store gives.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = (1_000, 3_000, 10_000, 30_000, 100_000)
MILLION = 1_000_000
PROBES = 300
IDENTITY_NOISE, PROBE_NOISE = 1.2, 1.02


def real_embeddings(cache: Path | None = None) -> np.ndarray:
    """(faces, 1024) FaceRes embeddings of every face in the shared fixtures' photos and the packages' sample
    photos; cached in `cache` if given."""
    if cache is not None and cache.exists():
        return np.load(cache)
    from faceserve.dev import photos
    from faceserve.dev.fixtures import FIXTURES
    from faceserve.services import Services

    images = [photos.load_rgb(f) for f in sorted(FIXTURES.rglob("*")) if f.suffix.lower() in (".jpg", ".jpeg", ".png")]
    images += [photos.astronaut(), photos.grace_hopper()]

    async def embed() -> list[np.ndarray]:
        services = Services.build()
        await services.resources.start()
        try:
            pipeline, found = services.resources.pipeline, []
            for image in images:
                if faces := await pipeline.locate(image):
                    found.append(await pipeline.embed(image, faces))
            return found
        finally:
            await services.close()
    vectors = np.concatenate(asyncio.run(embed())).astype(np.float32)
    if cache is not None:
        np.save(cache, vectors)
    return vectors


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def synthetic_gallery(real: np.ndarray, size: int, seed: int = 0, chunk: int = 50_000):
    """Yield the gallery's identities' unit vectors in chunks (module docstring: how they are made)."""
    rng, spread = np.random.default_rng(seed), real.std(axis=0)
    for start in range(0, size, chunk):
        rows = np.arange(start, min(size, start + chunk))
        noise = rng.standard_normal((len(rows), real.shape[1]), dtype=np.float32)
        yield _unit(real[rows % len(real)] + IDENTITY_NOISE * spread * noise)


def probes_of(real: np.ndarray, identities: np.ndarray, seed: int = 1) -> np.ndarray:
    """A same-person probe of each of these identities' vectors."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(identities.shape, dtype=np.float32)
    return _unit(identities + PROBE_NOISE * real.std(axis=0) * noise)


def fill_store(url: str, real: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
    """Enrol `size` synthetic identities of one face each straight into the store's tables (one change); return
    PROBES probes of identities picked at random."""
    from faceserve.gallery import EmbeddingModel, Gallery
    from faceserve.gallery.gallery import INSERT_FACE, INSERT_IDENTITY
    from faceserve.gallery.migrations import TOPIC
    from faceserve.store import new_id, open_store, utc_now

    picked = np.sort(np.random.default_rng(seed + 7).choice(size, min(PROBES, size), replace=False))
    chosen = []
    with open_store(url) as store:
        Gallery(store, EmbeddingModel("faceres", "1", real.shape[1]))  # the tables
        with store.transaction() as tx:
            version, done = tx.bump(TOPIC), 0
            for vectors in synthetic_gallery(real, size, seed):
                identities = [new_id() for _ in vectors]
                now = utc_now()
                tx.executemany(INSERT_IDENTITY, [(i, f"person {done + n}", "{}", now) for n, i in enumerate(identities)])
                tx.executemany(INSERT_FACE, [(new_id(), i, "faceres", "1", len(v), v.astype("<f4").tobytes(), "0" * 64,
                                              0.0, 0.0, 1.0, 1.0, None, None, None, None, now, version)
                                             for i, v in zip(identities, vectors)])
                inside = picked[(picked >= done) & (picked < done + len(vectors))]
                chosen.append(vectors[inside - done])
                done += len(vectors)
    return probes_of(real, np.concatenate(chosen))


def worker(url: str, index_dir: str, probes_file: str, exact_below: int, rate: float = 0.0) -> dict:
    """What one worker process sees: warm start to its first answer, then ms per face and its memory. Where the
    first answer started a build (no saved index yet), the probes are searched one after another while it runs,
    `rate` a second (0: back to back) (`during_build`: their latencies and answers), then all of them again once
    its index is swapped in."""
    import psutil
    import resource

    from faceserve.gallery import EmbeddingModel, Gallery
    from faceserve.store import open_store

    probes = np.load(probes_file)
    started = time.perf_counter()
    gallery = Gallery(open_store(url), EmbeddingModel("faceres", "1", probes.shape[1]), poll_interval_s=3600,
                      index_dir=Path(index_dir), exact_below=exact_below)
    gallery.search(probes[:1], 5)
    warm_s = time.perf_counter() - started
    during: dict | None = None
    if gallery.index.building:
        latencies, answered = [], {}
        while gallery.index.building:
            probe = len(latencies) % len(probes)
            t0 = time.perf_counter()
            answered[probe] = gallery.search(probes[probe][None, :], 5)[0][0].identity_id
            latencies.append(time.perf_counter() - t0)
            if rate:
                time.sleep(max(0.0, t0 + 1 / rate - time.perf_counter()))
        during = {"index_ready_s": round(time.perf_counter() - started, 2), "searches": len(latencies),
                  "answers": {str(probe): answer for probe, answer in answered.items()},
                  **{f"ms_{name}": round(1e3 * float(value), 3) for name, value in zip(
                      ("p50", "p99", "max"), (*np.percentile(latencies, [50, 99]), max(latencies)))}}
    answers, times = [], []
    for probe in probes:
        t0 = time.perf_counter()
        answers.append(gallery.search(probe[None, :], 5)[0][0].identity_id)
        times.append(time.perf_counter() - t0)
    memory = psutil.Process().memory_full_info()
    gallery.close()
    return {"warm_start_s": round(warm_s, 2), "ms_per_face": round(1e3 * float(np.median(times)), 3),
            "ms_per_face_min": round(1e3 * float(np.min(times)), 3),
            "ms_per_face_p95": round(1e3 * float(np.percentile(times, 95)), 3),
            "ms_per_face_p99": round(1e3 * float(np.percentile(times, 99)), 3), "answers": answers,
            "saved_index": gallery.index.saved is not None, "during_build": during,
            "rss_mb": round(memory.rss / 2**20), "uss_mb": round(memory.uss / 2**20),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10)}


def _run_worker(url: str, index_dir: Path, probes_file: Path, exact_below: int, rate: float = 0.0) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.search", "--worker", url, str(index_dir), str(probes_file),
                          str(exact_below), str(rate)], capture_output=True, text=True, check=True, cwd=HERE.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def measure(sizes: tuple[int, ...], real: np.ndarray, rate: float = 0.0) -> list[dict]:
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="faceserve-bench-search-") as folder:
            folder = Path(folder)
            url = f"sqlite:///{folder / 'gallery.db'}"
            np.save(folder / "probes.npy", fill_store(url, real, size))
            exact = _run_worker(url, folder / "index", folder / "probes.npy", exact_below=size + 1)
            # builds and saves in the background, searching meanwhile
            built = _run_worker(url, folder / "index", folder / "probes.npy", exact_below=1, rate=rate)
            approximate = _run_worker(url, folder / "index", folder / "probes.npy", exact_below=1)  # starts warm
            saved_mb = sum(f.stat().st_size for f in (folder / "index").rglob("*") if f.is_file()) / 2**20
        recall = float(np.mean([a == e for a, e in zip(approximate["answers"], exact["answers"])]))
        during = built["during_build"] or {}
        answered = during.get("answers", {})
        rows.append({"identities": size, "probes": len(exact["answers"]), "recall_at_1": round(recall, 4),
                     "exact_ms_per_face": exact["ms_per_face"], "ann_ms_per_face": approximate["ms_per_face"],
                     "exact_ms_per_face_min": exact["ms_per_face_min"],
                     "ann_ms_per_face_min": approximate["ms_per_face_min"],
                     "ann_ms_per_face_p95": approximate["ms_per_face_p95"],
                     "exact_ms_per_face_p99": exact["ms_per_face_p99"],
                     "first_answer_while_building_s": built["warm_start_s"],
                     "index_ready_s": during.get("index_ready_s"), "searches_during_build": during.get("searches"),
                     "during_build_ms_p50": during.get("ms_p50"), "during_build_ms_p99": during.get("ms_p99"),
                     "during_build_ms_max": during.get("ms_max"),
                     "during_build_same_top1_as_exact": round(float(np.mean(
                         [answer == exact["answers"][int(probe)] for probe, answer in answered.items()])), 4)
                     if answered else None, "during_build_probes": len(answered),
                     "peak_rss_mb_building": built["peak_rss_mb"], "warm_start_s": approximate["warm_start_s"],
                     "exact_start_s": exact["warm_start_s"], "rss_mb_exact": exact["rss_mb"],
                     "rss_mb_ann": approximate["rss_mb"], "uss_mb_ann": approximate["uss_mb"],
                     "saved_index_mb": round(saved_mb, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def crossover(rows: list[dict], statistic: str = "min") -> int | None:
    """The gallery size where exact search's ms per face meets the approximate path's (log-linear between the
    measured sizes), by each one's fastest answer: on a loaded machine the median measures the other load, exact
    search's BLAS threads most of all."""
    suffix = "_min" if statistic == "min" else ""
    for low, high in zip(rows, rows[1:]):
        d_low = low[f"exact_ms_per_face{suffix}"] - low[f"ann_ms_per_face{suffix}"]
        d_high = high[f"exact_ms_per_face{suffix}"] - high[f"ann_ms_per_face{suffix}"]
        if d_low <= 0 < d_high:
            share = -d_low / (d_high - d_low)
            return int(round(np.exp(np.log(low["identities"]) + share * np.log(high["identities"] / low["identities"]))))
    return None


def report(result: dict, out: Path) -> str:
    lines = [f"# Search per face ({result['meta']['date']}, {result['meta']['machine']})", "",
             "| identities | recall@1 vs exact | exact ms/face median (min) | ANN ms/face median (min, p95) | "
             "first answer s (index ready s) | warm start s | RSS MB exact | RSS MB ANN (own: USS) | saved index MB |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['identities']:,} | {100 * r['recall_at_1']:.2f} % ({r['probes']} probes) | "
                     f"{r['exact_ms_per_face']} ({r['exact_ms_per_face_min']}) | "
                     f"{r['ann_ms_per_face']} ({r['ann_ms_per_face_min']}, {r['ann_ms_per_face_p95']}) | "
                     f"{r['first_answer_while_building_s']} ({r['index_ready_s']}) | {r['warm_start_s']} | "
                     f"{r['rss_mb_exact']} | {r['rss_mb_ann']} ({r['uss_mb_ann']}) | {r['saved_index_mb']} |")
    lines += ["", f"Crossover (exact = ANN, fastest ms per face): about {result['crossover']:,} identities"
              if result["crossover"] else "Crossover: not within the measured sizes", "",
              "While the first worker builds the index in the background (searching exactly meanwhile), one probe "
              "after another" + (f", {result['meta']['rate_during_build']:g} a second:"
                                 if result["meta"].get("rate_during_build") else ", back to back:"), "",
              "| identities | exact ms/face p50 / p99, no build | during the build: ms p50 / p99 / max (searches) | "
              "same top-1 as exact (probes) | index ready s | peak RSS MB |", "|---|---|---|---|---|---|"]
    for r in result["rows"]:
        same = r["during_build_same_top1_as_exact"]
        lines.append(f"| {r['identities']:,} | {r['exact_ms_per_face']} / {r['exact_ms_per_face_p99']} | "
                     f"{r['during_build_ms_p50']} / {r['during_build_ms_p99']} / {r['during_build_ms_max']} "
                     f"({r['searches_during_build']}) | "
                     f"{'–' if same is None else f'{100 * same:.2f} %'} ({r['during_build_probes']}) | "
                     f"{r['index_ready_s']} | {r['peak_rss_mb_building']} |")
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["identities"] for r in rows]
    figure, (speed, recall) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in (("exact", "exact (float32 matrix)"), ("ann", "usearch HNSW float16, memory-mapped")):
        line, = speed.plot(sizes, [r[f"{key}_ms_per_face"] for r in rows], "o-", label=f"{label}, median")
        speed.plot(sizes, [r[f"{key}_ms_per_face_min"] for r in rows], "o--", color=line.get_color(),
                   label=f"{label}, fastest")
    speed.set(xscale="log", yscale="log", xlabel="identities (one face each)", ylabel="ms per face",
              title="Search per face")
    speed.legend(fontsize=8)
    recall.plot(sizes, [100 * r["recall_at_1"] for r in rows], "o-")
    recall.axhline(99.5, color="black", linestyle="--", label="target 99.5 %")
    recall.set(xscale="log", xlabel="identities", ylabel="recall@1 vs exact (%)", title="Same top-1 as exact")
    recall.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--million", action="store_true", help="add the 1 M gallery (a long build on 2 cores)")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/<date>-search")
    parser.add_argument("--rate-during-build", type=float, default=0.0,
                        help="searches a second while the index is built (default 0: one after another)")
    parser.add_argument("--worker", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        url, index_dir, probes, exact_below, rate = args.worker
        print(json.dumps(worker(url, index_dir, probes, int(exact_below), float(rate))))
        return 0
    from benchmarks.__main__ import machine

    out = (args.out or HERE / "results" / f"{datetime.date.today().isoformat()}-search").resolve()
    out.mkdir(parents=True, exist_ok=True)
    real = real_embeddings(Path(tempfile.gettempdir()) / "faceserve-real-embeddings.npy")
    sizes = tuple(sorted(set(args.sizes) | ({MILLION} if args.million else set())))
    started = time.perf_counter()
    rows = measure(sizes, real, args.rate_during_build)
    result = {"meta": {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
                       "load_average": os.getloadavg(), "command": "python -m benchmarks.search " + " ".join(
                           argv if argv is not None else sys.argv[1:]), "real_faces": len(real),
                       "rate_during_build": args.rate_during_build,
                       "elapsed_s": round(time.perf_counter() - started, 1)},
              "rows": rows, "crossover": crossover(rows)}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    plot(rows, out / "search.png")
    print(report(result, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
