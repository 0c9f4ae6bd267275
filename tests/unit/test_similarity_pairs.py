"""The calibration set's pairs (benchmarks/similarity.py) over a scripted pipeline: labelled photos paired by label,
the faces of one group photo paired with each other (only those at a hand box, where the photo has them), every group
face paired with every labelled face, and faces of two group photos never; the DET plot drawn from them."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import similarity
from faceserve.models.calibration import BY_MODEL, Calibration
from faceserve.pipeline.pipeline import FoundFace


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, np.float32)
    return vector / np.linalg.norm(vector)


def photo(key: int) -> np.ndarray:
    image = np.zeros((100, 100, 3), np.uint8)
    image[0, 0, 0] = key
    return image


class ScriptedPipeline:
    """Faces by photo key, vectors by box."""

    def __init__(self, faces: dict[int, list[tuple]], vectors: dict[tuple, np.ndarray]):
        self.faces, self.vectors = faces, vectors

    async def locate(self, image, detector=None):
        return [FoundFace(box, 0.9, None, None) for box in self.faces.get(int(image[0, 0, 0]), [])]

    async def embed(self, image, faces):
        return np.stack([self.vectors[f.box] for f in faces])


def test_the_three_rules_pair_labelled_and_group_faces(run):
    pipeline = ScriptedPipeline(
        faces={1: [(0, 0, 50, 50), (60, 60, 70, 70)], 2: [(0, 0, 40, 40)], 3: [(0, 0, 30, 30)], 4: [],
               10: [(0, 0, 20, 20), (30, 0, 50, 20), (80, 80, 90, 90)], 11: [(0, 0, 10, 10)]},
        vectors={(0, 0, 50, 50): unit(1, 0, 0), (60, 60, 70, 70): unit(0, 0, 1), (0, 0, 40, 40): unit(0.8, 0.6, 0),
                 (0, 0, 30, 30): unit(0, 1, 0), (0, 0, 20, 20): unit(0.6, 0.8, 0), (30, 0, 50, 20): unit(0, 0.6, 0.8),
                 (80, 80, 90, 90): unit(1, 1, 1), (0, 0, 10, 10): unit(0, 0.8, 0.6)})
    calibration_set = similarity.CalibrationSet(
        "scripted", people=[("ann", "a1", photo(1)), ("ann", "a2", photo(2)), ("bob", "b1", photo(3)),
                            ("cy", "c1", photo(4))],  # cy's photo has no face found: left out
        groups=[similarity.GroupPhoto("g1", photo(10), boxes=((0, 0, 20, 20), (30, 0, 50, 20))),  # 3rd box: stray
                similarity.GroupPhoto("g2", photo(11))])
    scored = run(similarity.score(pipeline, calibration_set))
    assert scored.same.tolist() == pytest.approx([0.8])  # ann's largest faces
    assert scored.different.tolist() == pytest.approx([
        0.0, 0.6,  # ann 1 and ann 2 against bob
        0.48,  # g1's two faces (its stray box left out)
        0.6, 0.96, 0.8,  0.0, 0.36, 0.6,  # g1's faces against ann 1, ann 2, bob
        0.0, 0.48, 0.8])  # g2's face against ann 1, ann 2, bob; never against g1's
    assert scored.faces == {"people_faces": 3, "people": 2, "group_photos": 2, "group_faces": 3}
    assert [label for label, _ in scored.group_crops] == ["g1 #0", "g1 #1", "g2 #0"]


def test_the_det_plot_is_drawn_with_the_operating_point(tmp_path):
    same, different = np.array([0.62, 0.7, 0.8]), np.linspace(0.1, 0.6, 300)
    point = Calibration.from_scores(same, different, model="m", model_sha256="", recipe={},
                                    calibration_set="s").point(0.59, BY_MODEL, 0.001)
    similarity.draw(same, different, point, tmp_path / "similarity.png")
    assert (tmp_path / "similarity.png").read_bytes().startswith(b"\x89PNG")
