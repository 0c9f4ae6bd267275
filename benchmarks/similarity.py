"""Same-person and different-people similarities on the identity photos (`../shared/fixtures/identity/`):
their distributions and the DET curve (false accepts against false rejects at every threshold), drawn
as `similarity.png`, with the error rates at the shipped threshold. The threshold's evidence.
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path

import numpy as np

from faceserve.dev import photos
from faceserve.dev.fixtures import FIXTURES, SINGLE_FACE_PROBES

IDENTITY_SET = FIXTURES / "identity"


def labelled_photos(folder: Path = IDENTITY_SET) -> list[tuple[str, Path]]:
    """(person, path) for every single-face photo of the set; empty without the fixtures."""
    found = [(person.name, photo) for person in sorted((folder / "enroll").glob("*")) if person.is_dir()
             for photo in sorted(person.iterdir())]
    found += [(person, folder / "probe" / name) for name, person in SINGLE_FACE_PROBES.items()
              if (folder / "probe" / name).exists()]
    return found


def labelled_faces(folder: Path = IDENTITY_SET) -> list[tuple[str, str, np.ndarray]]:
    """(person, file, RGB image) for every single-face photo of the set; empty without the fixtures."""
    return [(person, path.name, photos.load_rgb(path)) for person, path in labelled_photos(folder)]


async def similarities(pipeline, faces: list[tuple[str, str, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarities of every same-person pair and every different-people pair (largest face each)."""
    embedded = []
    for _, _, image in faces:
        located = await pipeline.locate(image)
        largest = max(located, key=lambda f: (f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))
        embedded.append((await pipeline.embed(image, [largest]))[0])
    same, different = [], []
    for (i, a), (j, b) in itertools.combinations(enumerate(faces), 2):
        (same if a[0] == b[0] else different).append(float(embedded[i] @ embedded[j]))
    return np.array(same), np.array(different)


def error_rates(same: np.ndarray, different: np.ndarray, threshold: float) -> tuple[float, float]:
    """False accepts (different people at or above) and false rejects (same person below), as fractions."""
    return float((different >= threshold).mean()), float((same < threshold).mean())


def draw(same: np.ndarray, different: np.ndarray, threshold: float, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (spread, det) = plt.subplots(1, 2, figsize=(11, 4.2))
    bins = np.linspace(min(same.min(), different.min()) - 0.02, max(same.max(), different.max()) + 0.02, 40)
    spread.hist(different, bins=bins, alpha=0.6, label=f"different people ({len(different)} pairs)")
    spread.hist(same, bins=bins, alpha=0.6, label=f"same person ({len(same)} pairs)")
    spread.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:g}")
    spread.set(xlabel="cosine similarity", ylabel="pairs", title="Similarity of face pairs")
    spread.legend(fontsize=8)
    thresholds = np.unique(np.concatenate([same, different, [threshold]]))
    rates = np.array([error_rates(same, different, t) for t in thresholds])
    floor = 1.0 / (2 * max(len(same), len(different)))  # zero errors drawn at half of one pair, on a log scale
    det.plot(np.maximum(rates[:, 0], floor), np.maximum(rates[:, 1], floor), marker=".")
    far, frr = error_rates(same, different, threshold)
    det.plot([max(far, floor)], [max(frr, floor)], "ko", label=f"at {threshold:g}: FAR {far:.1%}, FRR {frr:.1%}")
    det.set(xscale="log", yscale="log", xlabel="false accept rate", ylabel="false reject rate",
            title="DET curve")
    det.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def measure(out: Path) -> dict:
    """Draw `out/similarity.png` at the embedding model's shipped threshold; the figures for the report
    (empty without the fixtures)."""
    from faceserve.services import Services

    faces = labelled_faces()
    if not faces:
        return {}

    async def run():
        services = Services.build()
        await services.resources.start()
        try:
            return (services.resources.pipeline.require_embedding().spec.score_threshold,
                    *await similarities(services.resources.pipeline, faces))
        finally:
            await services.close()
    threshold, same, different = asyncio.run(run())
    draw(same, different, threshold, out / "similarity.png")
    far, frr = error_rates(same, different, threshold)
    return {"threshold": threshold, "same_person_pairs": len(same), "different_people_pairs": len(different),
            "same_min": round(float(same.min()), 3), "different_max": round(float(different.max()), 3),
            "false_accept_rate": round(far, 4), "false_reject_rate": round(frr, 4), "plot": "similarity.png"}
