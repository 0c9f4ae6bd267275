"""The `peer` scenario: faceserve's identity embedding beside `face_recognition` (dlib's 128-d ResNet behind the most
used Python face library) on the same labelled photos, in one run: every same-person pair and every different-people
pair of the identity photos (`similarity.labelled_photos`), the largest face of each photo on each side.

Each side is judged at its own standard operating point (faceserve: the threshold the service uses, the embedding
model's measured `score_threshold` unless FACESERVE_IDENTITY_THRESHOLD overrides it; face_recognition: `compare_faces`'
tolerance, distance <= 0.6), then at every threshold: the fewest errors, the EER, the FAR at which no same-person pair
is rejected and the FRR at which no different-people pair is accepted. A photo in which a side finds no face is that
side's failure: its pairs are rejected at every threshold (a false reject where it is the same person).

face_recognition runs in its own interpreter (`faceserve.dev.peers`), as `benchmarks/peer_face_recognition.py`;
faceserve in this process through the pipeline (`locate`, then `embed` of the largest face), as `similarity` does.
Both start from the same decoded pixels (PIL, converted to RGB) and are timed one photo at a time, on one thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from benchmarks import loadgen
from benchmarks.sweeps import Context, Skip

SCENARIO = "peer"
PEER_SCRIPT = Path(__file__).with_name("peer_face_recognition.py")
PEER_TOLERANCE = 0.6  # face_recognition.compare_faces' default: the same person at distance <= 0.6
# dlib-bin is built without BLAS, so its network runs on one thread anyway; these keep any BLAS-linked build there too.
ONE_THREAD = {"OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


@dataclasses.dataclass(frozen=True)
class Measure:
    """How a side compares two faces: its number's name and direction (`sign` +1: higher means more alike). Every
    score below is oriented so that higher means more alike; `native` turns it back into the side's own number."""
    name: str
    sign: int
    compare: Callable[[np.ndarray, np.ndarray], float]

    def score(self, a: np.ndarray, b: np.ndarray) -> float:
        return self.sign * self.compare(a, b)

    def native(self, score: float) -> float | None:
        return float(self.sign * score) if np.isfinite(score) else None

    @property
    def accepts(self) -> str:
        return "at or above" if self.sign > 0 else "at or below"


COSINE = Measure("cosine similarity", 1, lambda a, b: float(a @ b))
DISTANCE = Measure("euclidean distance", -1, lambda a, b: float(np.linalg.norm(a - b)))


@dataclasses.dataclass(frozen=True)
class Pairs:
    """Every same-person and every different-people pair's score (higher: more alike); -inf where either photo's face
    was not found, a pair rejected at every threshold."""
    same: np.ndarray
    different: np.ndarray


def pair_scores(people: Sequence[str], vectors: Sequence[np.ndarray | None], measure: Measure) -> Pairs:
    same, different = [], []
    for (a, u), (b, v) in itertools.combinations(zip(people, vectors), 2):
        (same if a == b else different).append(-np.inf if u is None or v is None else measure.score(u, v))
    return Pairs(np.array(same, np.float64), np.array(different, np.float64))


def errors(pairs: Pairs, threshold: float) -> tuple[int, int]:
    """False accepts (different people scoring at or above `threshold`) and false rejects (the same person below)."""
    return int((pairs.different >= threshold).sum()), int((pairs.same < threshold).sum())


def thresholds(pairs: Pairs) -> np.ndarray:
    """Every threshold that answers differently: each finite score (accepted from it up), and +inf (nothing)."""
    scores = np.concatenate([pairs.same, pairs.different])
    return np.append(np.unique(scores[np.isfinite(scores)]), np.inf)


def _rate(count: int, of: int) -> float | None:
    return round(count / of, 4) if of else None


def judged(pairs: Pairs, threshold: float, measure: Measure) -> dict:
    """The errors at `threshold` (a score) and the best any threshold does on these pairs. The EER is the least, over
    thresholds, of the larger of FAR and FRR: on a finite set the two rarely meet, this is where they come closest."""
    n_same, n_different = len(pairs.same), len(pairs.different)
    table = [(t, *errors(pairs, t)) for t in thresholds(pairs)]
    best_t, best_fa, best_fr = min(table, key=lambda r: (r[1] + r[2], r[1]))  # ties: the fewer false accepts
    eer = min(max(fa / max(n_different, 1), fr / max(n_same, 1)) for _, fa, fr in table)
    accepts_every_same = n_same and bool(np.isfinite(pairs.same).all())
    zero_far_t = min(t for t, fa, _ in table if fa == 0)
    fa, fr = errors(pairs, threshold)
    return {
        "same_person_pairs": n_same, "different_people_pairs": n_different,
        "false_accepts": fa, "false_rejects": fr, "far": _rate(fa, n_different), "frr": _rate(fr, n_same),
        "fewest_errors": best_fa + best_fr, "fewest_errors_false_accepts": best_fa,
        "fewest_errors_false_rejects": best_fr, "fewest_errors_threshold": measure.native(best_t),
        "eer": round(eer, 4),
        "far_at_zero_frr": _rate(errors(pairs, pairs.same.min())[0], n_different) if accepts_every_same else None,
        "frr_at_zero_far": _rate(errors(pairs, zero_far_t)[1], n_same),
    }


def separation(pairs: Pairs) -> dict:
    """Over the pairs scored (both faces found), in any side's units alike: the `gap`, the least alike same-person pair
    less the most alike different-people pair (positive: a threshold separates them all), and d′, the difference of
    the two means over their pooled standard deviation (the square root of the mean of the two variances)."""
    same, different = (scores[np.isfinite(scores)] for scores in (pairs.same, pairs.different))
    if not (len(same) and len(different)):
        return {"gap": None, "d_prime": None}
    pooled = np.sqrt((same.var() + different.var()) / 2)
    return {"gap": round(float(same.min() - different.max()), 4),
            "d_prime": round(float((same.mean() - different.mean()) / pooled), 3) if pooled else None}


def spread(scores: np.ndarray, measure: Measure) -> dict:
    """The distribution of the pairs a side could score, in its own number; `unscored`: pairs with a face not found."""
    found = np.array([measure.native(s) for s in scores if np.isfinite(s)])
    if not len(found):
        return {"unscored": len(scores)}
    return {"min": round(float(found.min()), 3), "median": round(float(np.median(found)), 3),
            "max": round(float(found.max()), 3), "mean": round(float(found.mean()), 3),
            "unscored": len(scores) - len(found)}


# ---- the two sides ----------------------------------------------------------------------------------------------

@dataclasses.dataclass
class Side:
    """One library's answers on the labelled photos: per photo its boxes, timings and the largest face's vector."""
    name: str
    measure: Measure
    threshold: float  # in the side's own number
    photos: list[dict]  # file, boxes (x1, y1, x2, y2), detect_ms, embed_ms and their CPU ms
    vectors: list[np.ndarray | None]
    notes: dict


def peer_side(paths: Sequence[Path], reps: int, timeout_s: float = 1800) -> Side:
    """face_recognition's answers, from its own interpreter (installed on first use: a minute)."""
    from faceserve.dev import peers

    try:
        interpreter = peers.python()
    except peers.PeerInstallError as exc:
        raise Skip(str(exc)[:400]) from None
    done = subprocess.run([str(interpreter), "-I", str(PEER_SCRIPT)], capture_output=True, text=True, timeout=timeout_s,
                          input=json.dumps({"paths": [str(p) for p in paths], "reps": reps}),
                          env={**os.environ, **ONE_THREAD})
    if done.returncode != 0:
        raise RuntimeError(f"the face_recognition peer failed ({done.returncode}): {done.stderr[-2000:]}")
    answer = json.loads(done.stdout)
    photos = [{"file": Path(p["path"]).name, "boxes": p["boxes"], "detect_ms": p["detect_ms"],
               "detect_cpu_ms": p["detect_cpu_ms"], "embed_ms": p["encode_ms"], "embed_cpu_ms": p["encode_cpu_ms"]}
              for p in answer["photos"]]
    vectors = [None if p["encoding"] is None else np.array(p["encoding"], np.float64) for p in answer["photos"]]
    notes = {"library": answer["library"], "detection": answer["detection"], "encoding": answer["encoding"],
             "dlib_uses_blas": answer["dlib_uses_blas"], "dimension": 128, "threads": "one (dlib-bin without BLAS; "
             + ", ".join(f"{k}=1" for k in ONE_THREAD) + ")"}
    return Side(answer["library"], DISTANCE, PEER_TOLERANCE, photos, vectors, notes)


@contextlib.contextmanager
def repository_with(embedding: str | None):
    """The settings' model repository with `embedding` its only embedding model (None: the one it serves), as a
    folder of links to its model folders; and that model's name."""
    from faceserve.models import tasks
    from faceserve.models.repository import Repository, load_spec, model_dirs
    from faceserve.settings import Settings

    settings = Settings.from_env()
    repository = settings.repository
    embeddings = sorted(d.name for d in model_dirs(repository) if load_spec(d).task == tasks.EMBEDDING)
    if not embeddings:
        raise Skip(f"{repository} has no embedding model; build one with "
                   "`python -m convert build --only embedding_dlib`")
    embedding = embedding or Repository.load(repository, settings.embedding_model).embedding.name
    if embedding not in embeddings:
        raise Skip(f"{embedding} is not an embedding model of {repository} (those built: {', '.join(embeddings)})")
    with tempfile.TemporaryDirectory(prefix="faceserve-peer-") as folder:
        for model in repository.iterdir():
            if model.name not in embeddings or model.name == embedding:
                (Path(folder) / model.name).symlink_to(model.resolve())
        yield Path(folder), embedding


def faceserve_side(paths: Sequence[Path], reps: int, embedding: str | None = None) -> Side:
    """faceserve's answers in this process: `Pipeline.locate` (the default detector and the landmark model), then
    `Pipeline.embed` of the largest face; one onnxruntime thread, no embedding cache, no batching delay."""
    from faceserve.dev import photos
    from faceserve.pipeline.pipeline import largest
    from faceserve.services import Services
    from faceserve.settings import Settings

    settings = dataclasses.replace(Settings.from_env(), ort_threads=1, embedding_cache=0, batch_delay_us=0)
    images = [photos.load_rgb(path) for path in paths]

    async def measure(repository: Path) -> tuple[dict, list[dict], list[np.ndarray | None]]:
        services = Services.build(settings, repository=repository)
        await services.resources.start()
        try:
            pipeline = services.resources.pipeline
            spec = pipeline.require_embedding().spec
            answered, vectors = [], []
            if images:  # the first call at each input size is dearer
                await pipeline.embed(images[0], (await pipeline.locate(images[0]))[:1])
            for path, image in zip(paths, images):
                least, boxes, vector = {}, [], None
                for _ in range(reps):
                    located, timing = await _timed(pipeline.locate(image))
                    _keep_least(least, "detect", timing)
                    boxes = [[round(float(v), 1) for v in face.box] for face in located]
                    if located:
                        embedded, timing = await _timed(pipeline.embed(image, [largest(located)]))
                        _keep_least(least, "embed", timing)
                        vector = embedded[0].astype(np.float64)
                answered.append({"file": path.name, "boxes": boxes, **{k: least.get(k) for k in (
                    "detect_ms", "detect_cpu_ms", "embed_ms", "embed_cpu_ms")}})
                vectors.append(vector)
            threshold, source = ((spec.score_threshold, f"{spec.name}'s score_threshold (its model config)")
                                 if settings.identity_threshold is None
                                 else (settings.identity_threshold, "FACESERVE_IDENTITY_THRESHOLD"))
            notes = {"library": f"faceserve {spec.name} v{spec.version}", "dimension": len(next(
                (v for v in vectors if v is not None), [])), "threshold_source": source,
                "detection": f"the default detector ({pipeline.detector(None).name}) and the landmark model",
                "threads": "one onnxruntime intra-op thread (FACESERVE_ORT_THREADS=1), no embedding cache, "
                           "no batching delay"}
            return {"threshold": float(threshold), **notes}, answered, vectors
        finally:
            await services.close()

    with repository_with(embedding) as (repository, name):
        notes, answered, vectors = asyncio.run(measure(repository))
    return Side(notes["library"], COSINE, notes.pop("threshold"), answered, vectors, notes)


async def _timed(awaitable):
    wall, cpu = time.perf_counter(), time.process_time()
    answer = await awaitable
    return answer, ((time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3)


def _keep_least(least: dict, what: str, timing: tuple[float, float]) -> None:
    for key, ms in zip((f"{what}_ms", f"{what}_cpu_ms"), timing):
        least[key] = round(min(ms, least.get(key, ms)), 2)


# ---- the scenario -----------------------------------------------------------------------------------------------

def side_row(ctx: Context, side: Side, people: Sequence[str]) -> dict:
    """A report row: ms per photo (detection, plus embedding of the largest face where one was found) as latencies,
    photos per second as throughput, and the side's pairs judged."""
    pairs = pair_scores(people, side.vectors, side.measure)
    per_photo = [p["detect_ms"] + (p["embed_ms"] or 0) for p in side.photos]
    cpu = [p["detect_cpu_ms"] + (p["embed_cpu_ms"] or 0) for p in side.photos]
    result = loadgen._result(len(per_photo), 0, sum(per_photo) / 1e3, per_photo)
    result["load_generator"] = "sequential loop (least of the repeats per photo)"
    embedded = [p for p in side.photos if p["embed_ms"] is not None]
    row = ctx.row(SCENARIO, 1, result, variant=side.name, mean_batch=None, peak_rss_mb={},
                  cpu_percent=round(100 * sum(cpu) / sum(per_photo), 1) if per_photo else None)
    return {**row, "workload": "identity photos", "measure": side.measure.name, "accepts": side.measure.accepts,
            "threshold": side.threshold, "photos": len(side.photos),
            "faces_not_found": [p["file"] for p, v in zip(side.photos, side.vectors) if v is None],
            "detect_ms_per_photo": _mean([p["detect_ms"] for p in side.photos]),
            "detect_cpu_ms_per_photo": _mean([p["detect_cpu_ms"] for p in side.photos]),
            "embed_ms_per_photo": _mean([p["embed_ms"] for p in embedded]),
            "embed_cpu_ms_per_photo": _mean([p["embed_cpu_ms"] for p in embedded]), **side.notes,
            **judged(pairs, side.measure.sign * side.threshold, side.measure), **separation(pairs),
            "same_person": spread(pairs.same, side.measure), "different_people": spread(pairs.different, side.measure),
            "pairs": {"same": [side.measure.native(s) for s in pairs.same],
                      "different": [side.measure.native(s) for s in pairs.different]},
            "per_photo": [{"person": person, **p} for person, p in zip(people, side.photos)]}


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


def peer(ctx: Context) -> list[dict]:
    """faceserve's embedding (each of `--peer-embeddings`, else the one served) and face_recognition on the identity
    photos, side by side: see the module's docstring."""
    from benchmarks.similarity import labelled_photos

    labelled = labelled_photos()
    if not labelled:
        raise Skip("needs the fixtures' identity photos (FACESERVE_FIXTURES)")
    people, paths = [person for person, _ in labelled], [path for _, path in labelled]
    reps = 3 if ctx.config.duration_s >= 5 else 1
    rows = []
    for embedding in ctx.config.peer_embeddings or (None,):
        rows.append(side_row(ctx, faceserve_side(paths, reps, embedding), people))
        ctx.advance(f"peer {rows[-1]['variant']}")
    rows.append(side_row(ctx, peer_side(paths, reps), people))
    ctx.advance("peer face_recognition")
    ctx.info[SCENARIO] = {"photos": len(paths), "people": len(set(people)), "timing": f"least of {reps} per photo",
                          "load_average": [round(v, 2) for v in os.getloadavg()]}
    return rows


def runs(cfg) -> int:
    return len(cfg.peer_embeddings or (None,)) + 1


# ---- the report -------------------------------------------------------------------------------------------------

def _n(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _pct(rate) -> str:
    return "–" if rate is None else f"{rate:.1%}"


def section(rows: list[dict]) -> list[str]:
    """report.md's tables for the peer rows."""
    sides = [r for r in rows if r["scenario"] == SCENARIO]
    if not sides:
        return []
    first = sides[0]
    lines = ["", f"## Identity embeddings side by side (`peer`): {first['photos']} labelled photos, "
             f"{first['same_person_pairs']} same-person and {first['different_people_pairs']} different-people pairs",
             "", "Largest face of each photo; a face a side does not find fails its pairs (never skipped). Errors at "
             "each library's own operating point, then the best any threshold does on these pairs.", "",
             "| side | operating point | photos without a face | false accepts | false rejects | fewest errors "
             "(FA + FR, at) | EER | FAR at FRR 0 | FRR at FAR 0 |", "|---|---|---|---|---|---|---|---|---|"]
    for r in sides:
        unit = "similarity" if r["measure"] == COSINE.name else "distance"
        op = f"{unit} {'>=' if r['accepts'] == COSINE.accepts else '<='} {r['threshold']:g}"
        lines.append(
            f"| {r['variant']} | {op} | {len(r['faces_not_found'])}"
            f"{' (' + ', '.join(r['faces_not_found']) + ')' if r['faces_not_found'] else ''} | "
            f"{r['false_accepts']}/{r['different_people_pairs']} ({_pct(r['far'])}) | "
            f"{r['false_rejects']}/{r['same_person_pairs']} ({_pct(r['frr'])}) | "
            f"{r['fewest_errors']} ({r['fewest_errors_false_accepts']} + {r['fewest_errors_false_rejects']}, "
            f"{unit} {_n(r['fewest_errors_threshold'])}) | {_pct(r['eer'])} | {_pct(r['far_at_zero_frr'])} | "
            f"{_pct(r['frr_at_zero_far'])} |")
    lines += ["", "| side | measure | same person: min / median / max | different people: min / median / max | "
              "gap | d′ | detection ms/photo (CPU ms) | embedding ms/photo (CPU ms) | CPU % of wall | threads |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sides:
        s, d = r["same_person"], r["different_people"]
        lines.append(f"| {r['variant']} | {r['measure']} | {_n(s.get('min'))} / {_n(s.get('median'))} / "
                     f"{_n(s.get('max'))} | {_n(d.get('min'))} / {_n(d.get('median'))} / {_n(d.get('max'))} | "
                     f"{_n(r['gap'])} | {_n(r['d_prime'], 2)} | {_n(r['detect_ms_per_photo'], 1)} "
                     f"({_n(r['detect_cpu_ms_per_photo'], 1)}) | {_n(r['embed_ms_per_photo'], 1)} "
                     f"({_n(r['embed_cpu_ms_per_photo'], 1)}) | "
                     f"{_n(r['cpu_percent'], 0)} | {r['threads']} |")
    lines += ["", "gap: the least alike same-person pair less the most alike different-people pair, in the side's own "
              "units (positive: a threshold separates every pair scored); d′: the two means' difference over their "
              "pooled standard deviation, comparable across sides. CPU % of wall below 100 on one thread: other work "
              "on the machine took the core part of the time."]
    lines += ["", "Plot: `peer.png` (both DET curves, each operating point marked; each side's distributions)."]
    return lines


def draw(rows: list[dict], out: Path) -> Path | None:
    """peer.png: every side's DET curve on one axes with its operating point, and each side's pair distributions."""
    sides = [r for r in rows if r["scenario"] == SCENARIO]
    if not sides:
        return None
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 1 + len(sides), figsize=(5.5 + 4.5 * len(sides), 4.6))
    det, spreads = axes[0], axes[1:]
    floor = 1.0 / (2 * max(max(r["same_person_pairs"], r["different_people_pairs"]) for r in sides))
    for i, (r, ax) in enumerate(zip(sides, spreads)):
        colour, measure = f"C{i}", COSINE if r["measure"] == COSINE.name else DISTANCE
        under = len(sides) - 1 - i  # each side drawn wider than the next, so that curves that coincide stay visible
        pairs = Pairs(*(np.array([-np.inf if v is None else measure.sign * v for v in r["pairs"][k]], np.float64)
                        for k in ("same", "different")))
        rates = np.array([errors(pairs, t) for t in thresholds(pairs)], np.float64)
        rates /= [max(len(pairs.different), 1), max(len(pairs.same), 1)]
        det.plot(np.maximum(rates[:, 0], floor), np.maximum(rates[:, 1], floor), color=colour, alpha=0.8,
                 linestyle=("-", "--", ":")[i % 3], linewidth=1.5 + 2.5 * under, marker=".^s"[i % 3],
                 markersize=4 + 3 * under, label=f"{r['variant']} (EER {r['eer']:.1%})")
        det.plot([max(r["far"], floor)], [max(r["frr"], floor)], marker="o", markersize=9 + 6 * under, color=colour,
                 markeredgecolor="black", linestyle="none",
                 label=f"at {r['threshold']:g}: FAR {r['far']:.1%}, FRR {r['frr']:.1%}")
        found = [[v for v in r["pairs"][k] if v is not None] for k in ("different", "same")]
        bins = np.linspace(min(min(v) for v in found if v), max(max(v) for v in found if v), 30)
        ax.hist(found[0], bins=bins, alpha=0.6, label=f"different people ({len(found[0])} pairs)")
        ax.hist(found[1], bins=bins, alpha=0.6, label=f"same person ({len(found[1])} pairs)")
        ax.axvline(r["threshold"], color="black", linestyle="--", label=f"operating point {r['threshold']:g}")
        unscored = r["same_person"]["unscored"] + r["different_people"]["unscored"]
        ax.set(xlabel=r["measure"], ylabel="pairs",
               title=r["variant"] + (f"\n{unscored} pairs with a face not found" if unscored else ""))
        ax.legend(fontsize=7)
    det.set(xscale="log", yscale="log", xlabel="false accept rate", ylabel="false reject rate",
            title=f"DET curves (zero drawn at {floor:.1%})")
    det.grid(True, which="both", alpha=0.3)
    det.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(out / "peer.png", dpi=110)
    plt.close(figure)
    return out / "peer.png"
