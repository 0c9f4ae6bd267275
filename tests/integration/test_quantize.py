"""`python -m convert quantize`: the built emotion head (mini_XCEPTION .102) quantized to INT8 end to end, calibrated
on real faces and judged against the float version on the labelled faces; a budget it cannot meet writes nothing."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from convert import quantize
from convert.__main__ import main
from faceserve.models import versions
from faceserve.models.repository import CONFIG_FILE, load_spec, model_file, serving_version
from faceserve.models.repository import versions as built_versions

# the labelled detection set's 43 hand-boxed faces and the identity set's 14 single-face photos
JUDGED_FACES = 57


@pytest.fixture
def emotion_repo(repository, fixtures, tmp_path) -> Path:
    repo = tmp_path / "repo"
    shutil.copytree(repository / "emotion", repo / "emotion")  # the version folder's link copied as files
    return repo


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_int8_version_is_written_beside_the_float_one_with_its_figures(emotion_repo, caplog):
    model_dir = emotion_repo / "emotion"
    caplog.set_level(logging.INFO, logger="convert")

    assert main(["quantize", "emotion", "--repository", str(emotion_repo)]) == 0

    assert built_versions(model_dir) == [1, 2]
    assert serving_version(model_dir) == 1  # written beside, not served until promoted
    record = json.loads((model_dir / "2" / versions.BUILD_RECORD).read_text())
    float_record = json.loads((model_dir / "1" / versions.BUILD_RECORD).read_text())
    assert record["quantized"] == "int8" and record["from_version"] == 1
    assert record["source"] == float_record["source"] and record["sha256"] == float_record["sha256"]
    assert record["quantization"]["format"] == quantize.QUANT_FORMAT
    assert record["quantization"]["calibration_inputs"] > 20
    assert record["parity"]["faces"] == JUDGED_FACES
    assert 0.97 <= record["parity"]["top1_agreement"] <= 1.0
    assert record["budget"]["top1_agreement"] == 0.97
    assert "INT8 version 2 written beside version 1" in caplog.text

    int8 = onnx.load(str(model_file(model_dir, 2)))
    assert {"QLinearConv", "QuantizeLinear", "DequantizeLinear"} <= {n.op_type for n in int8.graph.node}

    # promoted, it serves with the float version's recipe; an INT8 version is not quantized again
    versions.promote(model_dir, 2)
    spec = load_spec(model_dir)
    assert spec.version == "2" and spec.labels == load_spec(emotion_repo / "emotion").labels
    rows, _ = quantize.evaluation_rows(spec)
    int8_scores = quantize.run_rows(spec, quantize.session(str(model_file(model_dir, 2))), rows)
    float_scores = quantize.run_rows(spec, quantize.session(str(model_file(model_dir, 1))), rows)
    name = spec.output_names[0]
    agreement = (int8_scores[name].argmax(axis=1) == float_scores[name].argmax(axis=1)).mean()
    assert agreement == pytest.approx(record["parity"]["top1_agreement"])
    assert np.allclose(int8_scores[name].sum(axis=1), 1.0, atol=1e-3)
    before = snapshot(model_dir)
    assert main(["quantize", "emotion", "--repository", str(emotion_repo)]) == 2
    assert "version 2 is already int8" in caplog.text
    assert snapshot(model_dir) == before


def test_a_budget_the_int8_model_cannot_meet_is_refused_and_nothing_is_written(emotion_repo, caplog):
    model_dir = emotion_repo / "emotion"
    before = snapshot(model_dir)

    assert main(["quantize", "emotion", "--repository", str(emotion_repo), "--top1-agreement", "1.01"]) == 1

    assert snapshot(model_dir) == before
    assert "refusing to write an INT8 version of emotion: top-1 agreement" in caplog.text
    assert "< 101%" in caplog.text and '"faces": 57' in caplog.text and "nothing written" in caplog.text


def test_a_folder_that_is_no_model_is_refused(emotion_repo, caplog):
    assert main(["quantize", "no_such_model", "--repository", str(emotion_repo)]) == 2
    assert "refusing to quantize no_such_model" in caplog.text
    assert not (emotion_repo / "no_such_model").exists()
    assert (emotion_repo / "emotion" / CONFIG_FILE).is_file()
