"""The peer scenario's face_recognition side for real: `benchmarks/peer_face_recognition.py` in the peer's own
interpreter (dlib-bin + face_recognition from PyPI, `faceserve.dev.peers`) on two of the identity photos."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks import peer
from benchmarks.similarity import IDENTITY_SET
from benchmarks.sweeps import Skip

OBAMA = (IDENTITY_SET / "probe" / "obama1.jpg", IDENTITY_SET / "enroll" / "obama" / "obama.jpg")


def test_face_recognition_finds_and_matches_obama_twice():
    if not all(path.exists() for path in OBAMA):
        pytest.skip(f"{IDENTITY_SET} is absent: the identity photos are needed")
    try:
        side = peer.peer_side(OBAMA, reps=1, timeout_s=120)
    except Skip as exc:  # the peer could not be installed here (no PyPI)
        pytest.skip(str(exc))
    assert side.name.startswith("face_recognition 1.3.0 (dlib-bin ")
    assert [p["file"] for p in side.photos] == ["obama1.jpg", "obama.jpg"]
    assert [len(p["boxes"]) for p in side.photos] == [1, 1]
    for (x1, y1, x2, y2), image in zip((p["boxes"][0] for p in side.photos), ((832, 1480), (1137, 910))):
        assert 0 <= x1 < x2 <= image[1] and 0 <= y1 < y2 <= image[0]
    assert all(v.shape == (128,) and np.isfinite(v).all() for v in side.vectors)
    assert all(p["detect_ms"] > 0 and p["embed_ms"] > 0 for p in side.photos)
    distance = float(np.linalg.norm(side.vectors[0] - side.vectors[1]))
    assert distance <= peer.PEER_TOLERANCE  # face_recognition's own verdict: the same person
    assert side.measure.score(*side.vectors) == pytest.approx(-distance)


def test_each_embedding_model_named_is_measured_on_its_own(tmp_path, monkeypatch):
    """`--peer-embeddings`: a repository with a second embedding model (here faceres again, under another name)
    measures each alone; a name that is no embedding model of it is a Skip that says which are."""
    from faceserve.settings import Settings

    if not all(path.exists() for path in OBAMA):
        pytest.skip(f"{IDENTITY_SET} is absent: the identity photos are needed")
    served = Settings.from_env().repository
    for model in served.iterdir():
        (tmp_path / model.name).symlink_to(model.resolve())
    copy = tmp_path / "embedding_copy"
    copy.mkdir()
    (copy / "1").symlink_to((served / "faceres" / "1").resolve())
    (copy / "config.pbtxt").write_text((served / "faceres" / "config.pbtxt").read_text()
                                       .replace('name: "faceres"', 'name: "embedding_copy"'))
    monkeypatch.setenv("FACESERVE_MODEL_REPOSITORY", str(tmp_path))
    sides = {name: peer.faceserve_side(OBAMA, 1, name) for name in ("faceres", "embedding_copy")}
    assert [side.name for side in sides.values()] == ["faceserve faceres v1", "faceserve embedding_copy v1"]
    for a, b in zip(*(side.vectors for side in sides.values())):
        assert a.shape == (1024,) and np.allclose(a, b, atol=1e-5)
    assert sides["faceres"].measure.score(*sides["faceres"].vectors) >= sides["faceres"].threshold
    with pytest.raises(Skip, match="mobilefacenet is not an embedding model of .*: embedding_copy, embedding_dlib, "
                                   "faceres"):
        peer.faceserve_side(OBAMA, 1, "mobilefacenet")
