"""The CLI: the endpoint's JSON and the annotated photo, without a server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from tests.support import ROOT, jpeg


def test_cli_prints_the_endpoint_json_and_annotates(tmp_path, emotion_grid):
    source = tmp_path / "grid.jpg"
    source.write_bytes(jpeg(emotion_grid))
    out = tmp_path / "annotated.png"
    result = subprocess.run([sys.executable, "-m", "faceserve", "analyze", str(source), "--annotate", str(out)],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    analysis = json.loads(result.stdout)
    assert len(analysis["faces"]) == 4 and analysis["detector"] == "auto"
    drawn = np.asarray(Image.open(out))
    assert drawn.shape == emotion_grid.shape and np.abs(drawn.astype(int) - emotion_grid).max() > 100


def test_installed_cli_annotates_outside_the_repository(tmp_path, repository, emotion_grid):
    """`pip install .` into a fresh virtual environment, run from another folder: the installed package
    alone (its dependencies are lent from this environment) analyses and annotates a photo."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    install = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "--no-deps",
                              str(ROOT)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-2000:]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "grid.jpg").write_bytes(jpeg(emotion_grid))
    lent = next(p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    env = {**os.environ, "PYTHONPATH": lent, "FACESERVE_MODEL_REPOSITORY": str(repository)}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import faceserve; print(faceserve.__file__)"],
                           cwd=elsewhere, env=env, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(venv)), where.stdout  # the installed copy, not the source tree
    result = subprocess.run([str(venv / "bin" / "faceserve"), "analyze", "grid.jpg", "--annotate", "out.png"],
                            cwd=elsewhere, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert len(json.loads(result.stdout)["faces"]) == 4
    drawn = np.asarray(Image.open(elsewhere / "out.png"))
    assert drawn.shape == emotion_grid.shape and np.abs(drawn.astype(int) - emotion_grid).max() > 100
