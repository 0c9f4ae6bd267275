"""FACESERVE_IDENTITY_FAR against the real service: a false-accept target the embedding's calibration cannot show
stops `bentoml serve` at start with a sentence saying what the pairs can show and what to set instead."""

from __future__ import annotations

import os
import subprocess

import httpx
import pytest

from faceserve.models.calibration import calibration_for
from faceserve.models.repository import Repository
from tests.support import BENTOML, ROOT, free_port


def test_a_far_target_the_calibration_cannot_show_stops_the_start(repository, tmp_path):
    built = Repository.load(repository)
    spec = built.embedding
    calibration = calibration_for(spec, built.model_file(spec.name))
    if calibration is None:
        pytest.fail(f"{spec.name} as built has no calibration: run `python -m benchmarks.similarity calibrate`")
    target = round(calibration.least_resolvable_far() / 2, 6)  # below what even 0 accepted of these pairs shows
    port = free_port()
    finished = subprocess.run([str(BENTOML), "serve", "service:FaceAnalysis", "--port", str(port)], cwd=ROOT,
                              env={**os.environ, "BENTOML_HOME": str(tmp_path), "FACESERVE_IDENTITY_FAR": str(target),
                                   "FACESERVE_IDENTITY_THRESHOLD": ""},
                              capture_output=True, text=True, timeout=120)
    assert finished.returncode != 0
    assert (f"FACESERVE_IDENTITY_FAR={target:g} cannot be shown by {spec.name}'s calibration: "
            f"{calibration.different_pairs} different-people pairs ({calibration.calibration_set})"
            ) in finished.stderr, finished.stderr[-2000:]
    assert "set FACESERVE_IDENTITY_FAR to" in finished.stderr
    assert "or set FACESERVE_IDENTITY_THRESHOLD" in finished.stderr
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/livez", timeout=2)
