"""`bentoml build` of both deployments works here and carries what each needs (and no TensorFlow)."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from faceserve.models.calibration import CALIBRATIONS
from tests.support import BENTOML, FIXTURES, ROOT

MODELS = ("face_detector", "emotion", "gender", "age")
FIXTURE_MODELS = ("gender", "age")
DEV_IMPORT = re.compile(r"^\s*(from|import)\s+faceserve\.dev\b|^\s*from\s+faceserve\s+import\s+dev\b", re.M)


def build(kind: str, home: Path) -> Path:
    done = subprocess.run([str(BENTOML), "build", "-f", f"bentos/{kind}/bentofile.yaml", "-o", "tag", "."],
                          cwd=ROOT, env={**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    (bento,) = [p for p in (home / "bentos").glob("*/*") if p.is_dir() and p.name != "latest"]
    return bento


def assert_no_development_code(source: Path) -> None:
    """The bento holds every module of the package but the development servers and fixtures (faceserve/dev/)
    and the bot, and none of the modules it holds imports them."""
    shipped = {p.relative_to(source).as_posix() for p in (source / "faceserve").rglob("*") if p.is_file()}
    assert not [name for name in shipped if name.startswith("faceserve/dev/")]
    package = ROOT / "faceserve"
    expected = {p.relative_to(ROOT).as_posix() for p in package.rglob("*.py")
                if p.relative_to(package).parts[0] not in ("dev", "bot") and "__pycache__" not in p.parts}
    modules = {name for name in shipped if name.endswith(".py")}
    assert modules == expected, (sorted(modules - expected), sorted(expected - modules))
    importers = [name for name in sorted(modules | {"service.py"})
                 if DEV_IMPORT.search((source / name).read_text())]
    assert importers == []


def test_root_bentofile_is_the_cpu_deployment():
    assert (ROOT / "bentofile.yaml").resolve() == (ROOT / "bentos" / "cpu" / "bentofile.yaml").resolve()


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_bento_builds(kind, repository, tmp_path_factory):
    bento = build(kind, tmp_path_factory.mktemp(f"bentoml-{kind}"))
    # what is installed: the requirements without their comments, and the lock BentoML writes beside them for an
    # image on a base of ours (bentos/image/)
    python = bento / "env" / "python"
    requirements = "\n".join(line.split("#")[0] for name in ("requirements.txt", "requirements.lock.txt")
                             if (python / name).exists() for line in (python / name).read_text().lower().splitlines())
    dockerfile = (bento / "env" / "docker" / "Dockerfile").read_text().lower()
    for text in (requirements, dockerfile):
        assert "tensorflow" not in text and "keras" not in text
    packages = {line.split("==")[0] for line in requirements.splitlines() if "==" in line}
    assert {"bentoml", "onnxruntime", "numpy", "opencv-python-headless"} <= packages
    assert "nvidia-pytriton" not in packages
    manifest = yaml.safe_load((bento / "bento.yaml").read_text())
    envs = {e["name"]: e["value"] for e in manifest["envs"]}
    assert envs["MALLOC_ARENA_MAX"] == "2"
    assert envs["BENTOML_DO_NOT_TRACK"] == "True"  # no usage reports leave the deployment
    source = bento / "src"
    assert (source / "service.py").is_file()
    assert_no_development_code(source)
    # what each embedding model's threshold stands for travels with the service (faceserve/models/calibration.py)
    assert sorted(p.name for p in (source / "faceserve" / "models" / "calibrations").glob("*.json")) == sorted(
        p.name for p in CALIBRATIONS.glob("*.json")) != []
    for name in MODELS:  # the service reads its model specs from the repository in either case
        assert (source / "model_repository" / name / "config.pbtxt").is_file()
        built = repository / name / "1" / "model.onnx"
        packed = source / "model_repository" / name / "1" / "model.onnx"
        if built.exists():
            assert packed.read_bytes() == built.read_bytes()
        else:  # gender and age come from ../shared/fixtures: unbuilt only where those are absent
            assert name in FIXTURE_MODELS and not (FIXTURES / "models").is_dir(), f"{name} is not built"
            assert not packed.exists()
    if kind == "cpu":
        assert envs["FACESERVE_BACKEND"] == "onnxruntime"
    else:
        assert "tritonclient" in packages
        assert envs["FACESERVE_BACKEND"].startswith("grpc://")
        assert (source / "model_repository" / "emotion" / "configs" / "gpu.pbtxt").is_file()
