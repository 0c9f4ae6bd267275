"""python -m benchmarks.search [--sizes N ...] [--million] [--model-dir DIR] [--out DIR]

Search per face at growing gallery sizes, exact (`similarity.py`) against the saved approximate index (`ann.py`),
through the gallery's own index over a real SQLite store: recall@1 of the approximate path against exact search,
ms per face of each, the build time, and a worker's warm start (a new process opening the store and the saved
index, to its first answer) with its memory after its searches (RSS, its anonymous and file-backed parts, PSS,
and USS: what is its own, not shared with other workers). The worker that builds the index (in the background)
searches the probes one after another while it runs: their latencies beside exact search's with no build
running, and whether they got exact search's top-1. Writes <out>/results.json (rows of sizes measured before in
the same folder, with the same model, are kept), <out>/report.md and <out>/search.png.

The galleries are synthetic, made from real embeddings: the embedding model's (`--model-dir`, default the one the
repository serves) embeddings of every face of the shared fixtures' photos (about 100 faces;
`real_embeddings`), so that the gallery has that model's dimension and spread. Identity i is
unit(real[i mod R] + a * sd * noise), sd the real embeddings' per-dimension spread and noise standard normal; a
probe of identity i is unit(identity_i + b * sd * noise): the gallery is R clusters of lookalikes (R = 100: 10 000
lookalikes each at 1 M). The factors (a, b) are per model (NOISE), chosen so that lookalikes fall below the
model's threshold and a probe above it, at a same-person photo's cosine (`recipe_cosines` measures them; results
keep them):
    faceres (1024-d, threshold 0.59): a = 1.2, b = 1.02: lookalikes at 0.53, others 0.20, a probe 0.78 to its
        identity and 0.45 to the most alike other one (the real faces' pairs: 0.37).
    embedding_dlib (128-d, threshold 0.915 to 0.943): a = 0.8, b = 0.6: lookalikes at 0.91 (99th percentile
        0.93), others 0.76, a probe 0.97 to its identity and 0.90 to the most alike other one (the real faces'
        pairs: 0.84; the calibration set's same-person pairs from 0.945 up).
Ground truth: exact top-1 of each probe over the gallery's float32 vectors, made again chunk by chunk (never the
whole matrix at once); the exact worker (up to `--exact-up-to`) is checked against it. Recall@1: the share of
probes whose best identity is the ground truth's.
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
CACHE = Path(tempfile.gettempdir()) / "faceserve-bench"  # the real embeddings, a file per model version
PROBES = 1_000
EXACT_UP_TO = 100_000  # exact search's worker (the whole gallery as one float32 matrix) up to this size
TOUCH = 10_000  # further searches of the worker whose memory is read
# (identity, probe) noise factors per embedding model (module docstring; `recipe_cosines` shows what they make)
NOISE = {"faceres": (1.2, 1.02), "embedding_dlib": (0.8, 0.6)}


def served_embedding_dir() -> Path:
    """The folder of the embedding model the project's repository serves."""
    from faceserve.models.repository import Repository
    from faceserve.settings import Settings

    repository = Repository.load(Settings.from_env().repository)
    if repository.embedding is None:
        raise SystemExit(f"{repository.path} has no embedding model; name one with --model-dir")
    return repository.path / repository.embedding.name


def embedding_repository(model_dir: Path, into: Path) -> Path:
    """A model repository in `into` whose only embedding model is `model_dir`, beside every other model of the
    project's repository (links, nothing copied)."""
    from faceserve.models.repository import load_spec, model_dirs
    from faceserve.models.tasks import EMBEDDING
    from faceserve.settings import Settings

    project = Settings.from_env().repository
    embeddings = {d.name for d in model_dirs(project) if load_spec(d).task == EMBEDDING}
    into.mkdir(parents=True, exist_ok=True)
    for folder in sorted(project.iterdir()):
        if folder.is_dir() and folder.name not in embeddings:
            (into / folder.name).symlink_to(folder.resolve())
    (into / model_dir.name).symlink_to(model_dir.resolve())
    return into


def real_embeddings(model_dir: Path | None = None, cache: Path | None = None) -> tuple[np.ndarray, tuple[str, str]]:
    """(faces, dimension) embeddings by the embedding model in `model_dir` (default: the one the repository
    serves) of every face in the shared fixtures' photos and the packages' sample photos, and the model's name and
    version; cached in the folder `cache` (a file per model version) if given."""
    from faceserve.models.repository import load_spec

    model_dir = model_dir or served_embedding_dir()
    spec = load_spec(model_dir)
    model = (spec.name, spec.version)
    cached = cache / f"real-embeddings-{spec.name}-{spec.version}.npy" if cache is not None else None
    if cached is not None and cached.exists():
        return np.load(cached), model
    from faceserve.dev import photos
    from faceserve.dev.fixtures import FIXTURES
    from faceserve.services import Services

    images = [photos.load_rgb(f) for f in sorted(FIXTURES.rglob("*")) if f.suffix.lower() in (".jpg", ".jpeg", ".png")]
    images += [photos.astronaut(), photos.grace_hopper()]

    async def embed(repository: Path) -> list[np.ndarray]:
        services = Services.build(repository=repository)
        await services.resources.start()
        try:
            pipeline, found = services.resources.pipeline, []
            assert pipeline.require_embedding().spec.name == spec.name
            for image in images:
                if faces := await pipeline.locate(image):
                    found.append(await pipeline.embed(image, faces))
            return found
        finally:
            await services.close()
    with tempfile.TemporaryDirectory(prefix="faceserve-bench-repository-") as folder:
        vectors = np.concatenate(asyncio.run(embed(embedding_repository(model_dir, Path(folder))))).astype(np.float32)
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(cached, vectors)
    return vectors, model


def _unit(vectors: np.ndarray) -> np.ndarray:
    return (vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)).astype(np.float32)


def noise_of(model: tuple[str, str]) -> tuple[float, float]:
    """The recipe's (identity, probe) noise factors for this embedding model (module docstring)."""
    if model[0] not in NOISE:
        raise SystemExit(f"no noise recipe for {model[0]}: add one to benchmarks/search.py's NOISE, checked with "
                         "recipe_cosines")
    return NOISE[model[0]]


def synthetic_gallery(real: np.ndarray, size: int, noise: float, seed: int = 0, chunk: int = 50_000):
    """Yield the gallery's identities' unit vectors in chunks (module docstring: how they are made); the same
    ones for the same seed."""
    rng, spread = np.random.default_rng(seed), real.std(axis=0)
    for start in range(0, size, chunk):
        rows = np.arange(start, min(size, start + chunk))
        yield _unit(real[rows % len(real)] + noise * spread * rng.standard_normal((len(rows), real.shape[1]),
                                                                                    dtype=np.float32))


def probes_of(real: np.ndarray, identities: np.ndarray, noise: float, seed: int = 1) -> np.ndarray:
    """A same-person probe of each of these identities' vectors."""
    rng = np.random.default_rng(seed)
    return _unit(identities + noise * real.std(axis=0) * rng.standard_normal(identities.shape, dtype=np.float32))


def recipe_cosines(real: np.ndarray, noise: tuple[float, float], per_face: int = 20) -> dict:
    """What the recipe makes, measured on `per_face` identities of every real face: cosine medians (and the 99th
    percentile of lookalikes) between identities of one real face (lookalikes), of different ones (strangers),
    of a probe to its identity and to the most alike other identity; and the real faces' own pairs."""
    identities = next(synthetic_gallery(real, len(real) * per_face, noise[0], seed=99, chunk=len(real) * per_face))
    probes = probes_of(real, identities, noise[1], seed=98)
    source = np.arange(len(identities)) % len(real)
    cosines, real_cosines = identities @ identities.T, real @ real.T
    lookalike = (source[:, None] == source[None, :]) & ~np.eye(len(identities), dtype=bool)
    to_all = probes @ identities.T
    own = np.diagonal(to_all).copy()
    np.fill_diagonal(to_all, -2.0)
    return {"real_pairs_median": round(float(np.median(real_cosines[np.triu_indices(len(real), 1)])), 3),
            "lookalikes_median": round(float(np.median(cosines[lookalike])), 3),
            "lookalikes_p99": round(float(np.percentile(cosines[lookalike], 99)), 3),
            "strangers_median": round(float(np.median(cosines[source[:, None] != source[None, :]])), 3),
            "probe_to_own_median": round(float(np.median(own)), 3),
            "probe_to_own_p5": round(float(np.percentile(own, 5)), 3),
            "probe_to_best_other_median": round(float(np.median(to_all.max(axis=1))), 3)}


def fill_store(url: str, real: np.ndarray, size: int, model: tuple[str, str], probes: int,
               seed: int = 0) -> tuple[np.ndarray, list[str]]:
    """Enrol `size` synthetic identities of one face each straight into the store's tables (one change); return
    `probes` probes of identities picked at random, and every identity's id in the gallery's order."""
    from faceserve.gallery import EmbeddingModel, Gallery
    from faceserve.gallery.gallery import INSERT_FACE, INSERT_IDENTITY
    from faceserve.gallery.migrations import TOPIC
    from faceserve.store import new_id, open_store, utc_now

    identity_noise, probe_noise = noise_of(model)
    picked = np.sort(np.random.default_rng(seed + 7).choice(size, min(probes, size), replace=False))
    chosen, ids = [], []
    with open_store(url) as store:
        Gallery(store, EmbeddingModel(*model, real.shape[1]))  # the tables
        with store.transaction() as tx:
            version = tx.bump(TOPIC)
            for vectors in synthetic_gallery(real, size, identity_noise, seed):
                identities = [new_id() for _ in vectors]
                now, done = utc_now(), len(ids)
                tx.executemany(INSERT_IDENTITY, [(i, f"person {done + n}", "{}", now) for n, i in enumerate(identities)])
                tx.executemany(INSERT_FACE, [(new_id(), i, *model, len(v), v.astype("<f4").tobytes(), "0" * 64,
                                              0.0, 0.0, 1.0, 1.0, None, None, None, None, now, version)
                                             for i, v in zip(identities, vectors)])
                inside = picked[(picked >= done) & (picked < done + len(vectors))]
                chosen.append(vectors[inside - done])
                ids += identities
    return probes_of(real, np.concatenate(chosen), probe_noise), ids


def ground_truth(real: np.ndarray, size: int, model: tuple[str, str], probes: np.ndarray, ids: list[str],
                 seed: int = 0) -> tuple[list[str], float]:
    """Exact top-1 of each probe over the gallery's float32 vectors, made again chunk by chunk (never the whole
    matrix at once): each probe's identity id, and the seconds it took."""
    started = time.perf_counter()
    best, best_row, done = np.full(len(probes), -np.inf, np.float32), np.zeros(len(probes), np.int64), 0
    for vectors in synthetic_gallery(real, size, noise_of(model)[0], seed):
        similarities = probes @ vectors.T
        top = similarities.argmax(axis=1)
        better = similarities[np.arange(len(probes)), top] > best
        best[better], best_row[better] = similarities[np.arange(len(probes)), top][better], done + top[better]
        done += len(vectors)
    return [ids[row] for row in best_row], time.perf_counter() - started


def self_found(index_dir: Path, sample: int = 10_000, seed: int = 3) -> dict:
    """Of `sample` faces of the saved index (all if fewer), how many its graph finds first by their own stored
    vector (a face no query finds is unreachable)."""
    from usearch.index import Index

    (folder,) = [p for p in index_dir.glob("*/*") if p.name.isdigit()]
    graph = Index.restore(str(folder / "index.usearch"), view=True)
    graph.expansion_search = 256
    rows = np.sort(np.random.default_rng(seed).choice(len(graph), min(sample, len(graph)), replace=False))
    vectors = np.asarray(graph.get(rows.astype(np.uint64)), np.float32).reshape(len(rows), -1)
    found = np.asarray(graph.search(vectors, 1, threads=1).keys, np.int64).reshape(-1)
    return {"checked": len(rows), "not_found": int((found != rows).sum())}


def _memory() -> dict:
    """This process's memory, MB: RSS, its anonymous and file-backed parts, PSS (shared pages divided among the
    processes mapping them) and USS (its own pages only)."""
    import psutil

    info = psutil.Process().memory_full_info()
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return {"rss_mb": round(info.rss / 2**20), "rss_anon_mb": round(int(status["RssAnon"].split()[0]) / 2**10),
            "rss_file_mb": round(int(status["RssFile"].split()[0]) / 2**10), "pss_mb": round(info.pss / 2**20),
            "uss_mb": round(info.uss / 2**20)}


def worker(url: str, index_dir: str, probes_file: str, exact_below: int, rate: float = 0.0, model: str = "",
           touch: int = 0) -> dict:
    """What one worker process sees: warm start to its first answer, then ms per face and its memory. Where the
    first answer started a build (no saved index yet), the probes are searched one after another while it runs,
    `rate` a second (0: back to back) (`during_build`: their latencies and answers), then all of them again once
    its index is swapped in. `touch`: further searches (the probes with more noise) before its memory is read,
    so that the pages a worker's searches visit over time are counted."""
    import resource

    from faceserve.gallery import EmbeddingModel, Gallery
    from faceserve.store import open_store

    probes = np.load(probes_file)
    name, version = model.split(":")
    started = time.perf_counter()
    gallery = Gallery(open_store(url), EmbeddingModel(name, version, probes.shape[1]), poll_interval_s=3600,
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
    rng = np.random.default_rng(5)
    for n in range(touch):
        probe = probes[n % len(probes)]
        gallery.search(_unit(probe + 0.05 * rng.standard_normal(probe.shape, dtype=np.float32))[None, :], 5)
    memory = _memory()
    gallery.close()
    return {"warm_start_s": round(warm_s, 2), "ms_per_face": round(1e3 * float(np.median(times)), 3),
            "ms_per_face_min": round(1e3 * float(np.min(times)), 3),
            "ms_per_face_p95": round(1e3 * float(np.percentile(times, 95)), 3),
            "ms_per_face_p99": round(1e3 * float(np.percentile(times, 99)), 3), "answers": answers,
            "saved_index": gallery.index.saved is not None, "during_build": during, "searches": len(probes) + touch,
            **memory, "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10)}


def _run_worker(url: str, index_dir: Path, probes_file: Path, exact_below: int, model: tuple[str, str],
                rate: float = 0.0, touch: int = 0) -> dict:
    out = subprocess.run([sys.executable, "-m", "benchmarks.search", "--worker", url, str(index_dir), str(probes_file),
                          str(exact_below), str(rate), ":".join(model), str(touch)], capture_output=True, text=True,
                         check=True, cwd=HERE.parent)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _share(answers: list[str], truth: list[str]) -> float:
    return round(float(np.mean([a == t for a, t in zip(answers, truth)])), 4)


def measure(sizes: tuple[int, ...], real: np.ndarray, model: tuple[str, str], *, probes: int = PROBES,
            rate: float = 0.0, exact_up_to: int = EXACT_UP_TO, touch: int = TOUCH, work: Path | None = None) -> list[dict]:
    rows = []
    for size in sizes:
        with tempfile.TemporaryDirectory(prefix="faceserve-bench-search-", dir=work) as folder:
            folder = Path(folder)
            url = f"sqlite:///{folder / 'gallery.db'}"
            started = time.perf_counter()
            probe_vectors, ids = fill_store(url, real, size, model, probes)
            fill_s = time.perf_counter() - started
            np.save(folder / "probes.npy", probe_vectors)
            truth, truth_s = ground_truth(real, size, model, probe_vectors, ids)
            del ids
            exact = _run_worker(url, folder / "index", folder / "probes.npy", size + 1, model) \
                if size <= exact_up_to else None
            # builds and saves in the background, searching meanwhile
            built = _run_worker(url, folder / "index", folder / "probes.npy", 1, model, rate=rate)
            approximate = _run_worker(url, folder / "index", folder / "probes.npy", 1, model, touch=touch)  # warm
            again = _run_worker(url, folder / "index", folder / "probes.npy", 1, model)  # a second worker's start
            files = {f.name: f.stat().st_size for f in (folder / "index").rglob("*") if f.is_file()}
            found = self_found(folder / "index")
            store_mb = (folder / "gallery.db").stat().st_size / 2**20
        during = built["during_build"] or {}
        answered = during.get("answers", {})
        row = {"identities": size, "probes": len(truth), "recall_at_1": _share(approximate["answers"], truth),
               "ground_truth_s": round(truth_s, 1), "fill_store_s": round(fill_s, 1),
               "store_mb": round(store_mb, 1),
               "exact_same_as_ground_truth": _share(exact["answers"], truth) if exact else None,
               "exact_ms_per_face": exact and exact["ms_per_face"], "exact_ms_per_face_min": exact and exact["ms_per_face_min"],
               "exact_ms_per_face_p99": exact and exact["ms_per_face_p99"],
               "exact_start_s": exact and exact["warm_start_s"], "rss_mb_exact": exact and exact["rss_mb"],
               "ann_ms_per_face": approximate["ms_per_face"], "ann_ms_per_face_min": approximate["ms_per_face_min"],
               "ann_ms_per_face_p95": approximate["ms_per_face_p95"], "ann_ms_per_face_p99": approximate["ms_per_face_p99"],
               "first_answer_while_building_s": built["warm_start_s"], "index_ready_s": during.get("index_ready_s"),
               "build_s": round(during["index_ready_s"] - built["warm_start_s"], 1) if during else None,
               "searches_during_build": during.get("searches"),
               "during_build_ms_p50": during.get("ms_p50"), "during_build_ms_p99": during.get("ms_p99"),
               "during_build_ms_max": during.get("ms_max"),
               "during_build_same_top1_as_exact": round(float(np.mean(
                   [answer == truth[int(probe)] for probe, answer in answered.items()])), 4) if answered else None,
               "during_build_probes": len(answered), "peak_rss_mb_building": built["peak_rss_mb"],
               "warm_start_s": approximate["warm_start_s"], "warm_start_s_second_worker": again["warm_start_s"],
               "ann_worker_searches": approximate["searches"],
               **{f"{key}_ann": approximate[key] for key in ("rss_mb", "rss_anon_mb", "rss_file_mb", "pss_mb", "uss_mb")},
               "saved_index_mb": round(sum(files.values()) / 2**20, 1),
               "graph_mb": round(sum(size for name, size in files.items() if name.endswith(".usearch")) / 2**20, 1),
               "graph_bytes_per_face": round(sum(size for name, size in files.items()
                                                 if name.endswith(".usearch")) / size, 1),
               "self_found_checked": found["checked"], "self_not_found": found["not_found"]}
        rows.append(row)
        print(json.dumps(row), flush=True)
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


TARGETS = {"recall_at_1": 0.995, "ann_ms_per_face": 2.0, "rss_mb_ann": 1000 * 1e6 / 2**20, "warm_start_s": 10.0}


def _cell(value, fmt: str = "{}") -> str:
    return "–" if value is None else fmt.format(value)


def report(result: dict, out: Path) -> str:
    meta = result["meta"]
    lines = [f"# Search per face ({meta['date']}, {meta['machine']})", "",
             f"Embedding `{meta['model'][0]}` version {meta['model'][1]}, {meta['dimension']} dimensions; "
             f"{meta['real_faces']} real faces; noise (identity, probe) {tuple(meta['noise'])}; what the recipe makes "
             f"(cosines): {', '.join(f'{k} {v}' for k, v in meta['recipe_cosines'].items())}.", "",
             "| identities | recall@1 vs exact (probes) | ANN ms/face median (min, p95, p99) | exact ms/face median (min) | "
             "build s | warm start s (second worker) | ANN worker RSS MB (anon, file) | PSS MB | USS MB | "
             "graph MB (bytes/face) | saved index MB | faces not found by their own vector |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        lines.append(f"| {r['identities']:,} | {100 * r['recall_at_1']:.2f} % ({r['probes']}) | "
                     f"{r['ann_ms_per_face']} ({r['ann_ms_per_face_min']}, {r['ann_ms_per_face_p95']}, "
                     f"{r['ann_ms_per_face_p99']}) | {_cell(r['exact_ms_per_face'])} ({_cell(r['exact_ms_per_face_min'])}) | "
                     f"{_cell(r['build_s'])} | {r['warm_start_s']} ({r['warm_start_s_second_worker']}) | "
                     f"{r['rss_mb_ann']} ({r['rss_anon_mb_ann']}, {r['rss_file_mb_ann']}) | {r['pss_mb_ann']} | "
                     f"{r['uss_mb_ann']} | {r['graph_mb']} ({r['graph_bytes_per_face']}) | {r['saved_index_mb']} | "
                     f"{r['self_not_found']} of {r['self_found_checked']:,} |")
    largest = max(result["rows"], key=lambda r: r["identities"])
    checks = [("recall@1 vs exact", f"{100 * largest['recall_at_1']:.2f} %", "≥ 99.5 %",
               largest["recall_at_1"] >= TARGETS["recall_at_1"]),
              ("ms per face (median)", largest["ann_ms_per_face"], "≤ 2 ms",
               largest["ann_ms_per_face"] <= TARGETS["ann_ms_per_face"]),
              ("RSS per worker", f"{largest['rss_mb_ann']} MiB", "≤ 1 GB", largest["rss_mb_ann"] <= TARGETS["rss_mb_ann"]),
              ("warm start", f"{largest['warm_start_s']} s", "≤ 10 s", largest["warm_start_s"] <= TARGETS["warm_start_s"])]
    lines += ["", f"Issue 23's targets at {largest['identities']:,} identities:", "", "| | measured | target | met |",
              "|---|---|---|---|"] + [f"| {name} | {value} | {target} | {'yes' if met else 'NO'} |"
                                      for name, value, target, met in checks]
    lines += ["", f"Crossover (exact = ANN, fastest ms per face): about {result['crossover']:,} identities"
              if result["crossover"] else "Crossover: not within the sizes exact search was measured at", "",
              "While the first worker builds the index in the background (searching exactly meanwhile), one probe "
              "after another (searches a second, 0: back to back):", "",
              "| identities | exact ms/face p50 / p99, no build | during the build: ms p50 / p99 / max (searches) | "
              "same top-1 as exact (probes) | index ready s | peak RSS MB | searches a second |",
              "|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        same = r["during_build_same_top1_as_exact"]
        lines.append(f"| {r['identities']:,} | {_cell(r['exact_ms_per_face'])} / {_cell(r['exact_ms_per_face_p99'])} | "
                     f"{r['during_build_ms_p50']} / {r['during_build_ms_p99']} / {r['during_build_ms_max']} "
                     f"({r['searches_during_build']}) | "
                     f"{'–' if same is None else f'{100 * same:.2f} %'} ({r['during_build_probes']}) | "
                     f"{r['index_ready_s']} | {r['peak_rss_mb_building']} | {r.get('rate_during_build', 0)} |")
    lines += ["", "| identities | fill the store s | store MB | ground truth s (chunked float32) | "
              "exact worker's top-1 = ground truth |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        same = r["exact_same_as_ground_truth"]
        lines.append(f"| {r['identities']:,} | {r['fill_store_s']} | {r['store_mb']} | {r['ground_truth_s']} | "
                     f"{'–' if same is None else f'{100 * same:.2f} %'} |")
    text = "\n".join(lines) + "\n"
    (out / "report.md").write_text(text)
    return text


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["identities"] for r in rows]
    figure, (speed, recall, memory) = plt.subplots(1, 3, figsize=(15, 4))
    line, = speed.plot(sizes, [r["ann_ms_per_face"] for r in rows], "o-", label="usearch HNSW float16, memory-mapped: median")
    speed.plot(sizes, [r["ann_ms_per_face_p95"] for r in rows], "o:", color=line.get_color(), label="… p95")
    exact = [r for r in rows if r["exact_ms_per_face"] is not None]
    if exact:
        speed.plot([r["identities"] for r in exact], [r["exact_ms_per_face"] for r in exact], "s-",
                   label="exact (float32 matrix): median")
    speed.axhline(2.0, color="black", linestyle="--", label="target 2 ms")
    speed.set(xscale="log", yscale="log", xlabel="identities (one face each)", ylabel="ms per face",
              title="Search per face")
    speed.legend(fontsize=8)
    recall.plot(sizes, [100 * r["recall_at_1"] for r in rows], "o-")
    recall.axhline(99.5, color="black", linestyle="--", label="target 99.5 %")
    recall.set(xscale="log", xlabel="identities", ylabel="recall@1 vs exact (%)", title="Same top-1 as exact")
    recall.legend(fontsize=8)
    for key, label in (("rss_mb_ann", "RSS"), ("pss_mb_ann", "PSS"), ("uss_mb_ann", "USS"), ("graph_mb", "graph file")):
        memory.plot(sizes, [r[key] for r in rows], "o-", label=label)
    memory.axhline(1e9 / 2**20, color="black", linestyle="--", label="target 1 GB")
    memory.set(xscale="log", xlabel="identities", ylabel="MiB", title="A worker's memory after its searches")
    memory.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--million", action="store_true", help="add the 1 M gallery (a long build on 2 cores)")
    parser.add_argument("--model-dir", type=Path, default=None,
                        help="the embedding model's folder (default: the one the model repository serves)")
    parser.add_argument("--probes", type=int, default=PROBES)
    parser.add_argument("--exact-up-to", type=int, default=EXACT_UP_TO,
                        help="measure exact search's worker up to this size (it holds the whole gallery)")
    parser.add_argument("--touch", type=int, default=TOUCH,
                        help="further searches by the measured worker before its memory is read")
    parser.add_argument("--work", type=Path, default=None, help="where the stores are made (default: the temp dir)")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: benchmarks/results/<date>-search; rows already there of other sizes are kept")
    parser.add_argument("--rate-during-build", type=float, default=0.0,
                        help="searches a second while the index is built (default 0: one after another)")
    parser.add_argument("--worker", nargs=7, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        url, index_dir, probes, exact_below, rate, model, touch = args.worker
        print(json.dumps(worker(url, index_dir, probes, int(exact_below), float(rate), model, int(touch))))
        return 0
    from benchmarks.__main__ import machine

    out = (args.out or HERE / "results" / f"{datetime.date.today().isoformat()}-search").resolve()
    out.mkdir(parents=True, exist_ok=True)
    real, model = real_embeddings(args.model_dir, CACHE)
    sizes = tuple(sorted(set(args.sizes) | ({MILLION} if args.million else set())))
    started = time.perf_counter()
    rows = measure(sizes, real, model, probes=args.probes, rate=args.rate_during_build, exact_up_to=args.exact_up_to,
                   touch=args.touch, work=args.work)
    command = "python -m benchmarks.search " + " ".join(argv if argv is not None else sys.argv[1:])
    run = {"date": datetime.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
           "load_average": os.getloadavg(), "command": command, "elapsed_s": round(time.perf_counter() - started, 1)}
    for row in rows:
        row.update(scenario="search", rate_during_build=args.rate_during_build, run=command)
    previous = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
    if previous is not None and tuple(previous["meta"]["model"]) == model:
        rows = sorted([r for r in previous["rows"] if r["identities"] not in sizes] + rows, key=lambda r: r["identities"])
        runs = previous["meta"]["runs"] + [run]
    else:
        runs = [run]
    result = {"meta": {"date": run["date"], "machine": run["machine"], "model": model, "dimension": real.shape[1],
                       "real_faces": len(real), "noise": noise_of(model),
                       "recipe_cosines": recipe_cosines(real, noise_of(model)), "runs": runs},
              "rows": rows, "crossover": crossover([r for r in rows if r["exact_ms_per_face"] is not None])}
    (out / "results.json").write_text(json.dumps(result, indent=1))
    plot(rows, out / "search.png")
    print(report(result, out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
