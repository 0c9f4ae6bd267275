"""An embedding model's calibration (`faceserve/models/calibration.py`): the DET table from known scores, the
false-accept bound a number of pairs can show, the threshold a FAR target picks, what a served model's answers say
with and without a calibration, and the refusals at start."""

from __future__ import annotations

import dataclasses

import pytest

from faceserve.models.calibration import (BY_FAR_TARGET, BY_MODEL, BY_SETTING, Calibration, CalibrationRefused,
                                          calibration_for, far_upper_bound, file_sha256, meets, operating_point)
from faceserve.models.spec import CropRecipe, ModelSpec
from faceserve.settings import Settings

ABOUT = {"model": "faceres", "model_sha256": "ab" * 32, "recipe": {}, "calibration_set": "test pairs"}
# 2000 different-people pairs, five of them high (0.60..0.64); four same-person pairs, the lowest at 0.62
DIFFERENT = [i / 10000 for i in range(1995)] + [0.6, 0.61, 0.62, 0.63, 0.64]
SAME = [0.62, 0.7, 0.75, 0.8]


def faceres(**changes) -> ModelSpec:
    spec = ModelSpec(name="faceres", task="embedding", decoder="embedding", input_name="input", height=224,
                     width=224, channels=3, output_names=("descriptor",), output_dims=((1024,),), colour="rgb",
                     scale=1.0, offset=0.0, crop=CropRecipe(margin=0.1, square=True), score_threshold=0.59)
    return dataclasses.replace(spec, **changes)


@pytest.fixture
def calibration() -> Calibration:
    return Calibration.from_scores(SAME, DIFFERENT, **ABOUT)


def test_the_det_table_counts_the_errors_at_every_score():
    table = Calibration.from_scores([0.7, 0.8, 0.65], [0.1, 0.3, 0.5, 0.66], **ABOUT)
    assert (table.same_pairs, table.different_pairs) == (3, 4)
    assert table.thresholds == (0.1, 0.3, 0.5, 0.65, 0.66, 0.7, 0.8, 0.8001)
    assert table.false_accepts == (4, 3, 2, 1, 1, 0, 0, 0)  # different pairs at or above
    assert table.false_rejects == (0, 0, 0, 0, 1, 1, 2, 3)  # same pairs below
    # between rows the counts are the row's above; a score itself is accepted
    assert [table.counts_at(t) for t in (0.05, 0.3, 0.66, 0.6601, 0.9)] == [(4, 0), (3, 0), (1, 1), (0, 1), (0, 3)]


def test_the_bound_is_the_rule_of_three_at_zero_and_clopper_pearson_above():
    assert far_upper_bound(0, 300) == pytest.approx(1 - 0.05 ** (1 / 300)) == pytest.approx(0.009936, abs=1e-6)
    assert 3 / 300 > far_upper_bound(0, 300) > 2.9 / 300  # the rule of three
    assert [round(far_upper_bound(k, 2000), 6) for k in range(6)] == [
        0.001497, 0.00237, 0.003145, 0.003872, 0.004571, 0.005249]
    assert far_upper_bound(5, 262) == pytest.approx(0.039705, abs=1e-6)  # issue 23's 5 false accepts of 262
    assert far_upper_bound(0, 0) == far_upper_bound(4, 4) == 1.0
    beta = pytest.importorskip("scipy.stats").beta
    for accepts, pairs in [(1, 300), (3, 10_000), (40, 16_000)]:
        assert far_upper_bound(accepts, pairs) == pytest.approx(beta.ppf(0.95, accepts + 1, pairs - accepts), rel=1e-9)
        assert meets(accepts, pairs, far_upper_bound(accepts, pairs) * 1.001)
        assert not meets(accepts, pairs, far_upper_bound(accepts, pairs) * 0.999)


def test_a_far_target_picks_the_least_threshold_whose_bound_meets_it(calibration):
    # 4 false accepts of 2000 are at most 0.457 %, 5 at most 0.525 %: 0.5 % is met from 0.605 (0.60 rejected) up
    assert calibration.threshold_for(0.005) == 0.605
    # no false accept: from the middle of 0.64 (the highest different pair) and 0.70, which rejects the 0.62 pair
    assert calibration.threshold_for(0.0015) == 0.67
    assert calibration.least_resolvable_far() == pytest.approx(0.0014967, abs=1e-7)
    assert calibration.threshold_for(0.0014) is None  # 2000 pairs cannot show it


def test_the_served_point_states_its_rates_and_pair_counts(calibration):
    point = operating_point(faceres(), calibration, far_target=0.005, threshold=None)
    assert point.model_dump() == {
        "threshold": 0.605, "chosen_by": BY_FAR_TARGET, "far_target": 0.005, "far": 0.002, "far_upper": 0.004571,
        "frr": 0.0, "false_accepts": 4, "different_pairs": 2000, "false_rejects": 0, "same_pairs": 4,
        "calibration_set": "test pairs"}
    told = operating_point(faceres(), calibration, far_target=None, threshold=0.615)
    assert (told.threshold, told.chosen_by, told.far_target, told.false_accepts, told.far, told.frr) == (
        0.615, BY_SETTING, None, 3, 0.0015, 0.0)


def test_without_a_far_setting_the_default_target_or_else_the_models_own_threshold_with_its_rates(calibration):
    # 2000 pairs cannot show 0.1 %: the model's 0.59 serves, and says what it stands for
    point = operating_point(faceres(), calibration, far_target=None, threshold=None)
    assert (point.threshold, point.chosen_by, point.far_target, point.false_accepts, point.far, point.far_upper,
            point.false_rejects) == (0.59, BY_MODEL, 0.001, 5, 0.0025, 0.005249, 0)
    large = Calibration.from_scores(SAME, [i / 100_000 for i in range(9995)] + [0.6, 0.61, 0.62, 0.63, 0.64], **ABOUT)
    met = operating_point(faceres(), large, far_target=None, threshold=None)
    assert (met.threshold, met.chosen_by, met.far_target, met.false_accepts, met.different_pairs) == (
        0.605, BY_FAR_TARGET, 0.001, 4, 10_000)  # 4 of 10 000: at most 0.0915 %; 5 would be at most 0.105 %
    assert met.far_upper == 0.000915
    unknown = operating_point(faceres(), None, far_target=None, threshold=None)
    assert unknown.model_dump() == {
        "threshold": 0.59, "chosen_by": BY_MODEL, "far_target": 0.001, "far": None, "far_upper": None, "frr": None,
        "false_accepts": None, "different_pairs": None, "false_rejects": None, "same_pairs": None,
        "calibration_set": None}


def test_a_far_target_the_calibration_cannot_show_refuses_the_start(calibration):
    with pytest.raises(CalibrationRefused) as refused:
        operating_point(faceres(), calibration, far_target=0.001, threshold=None)
    assert str(refused.value) == (
        "faceserve: FACESERVE_IDENTITY_FAR=0.001 cannot be shown by faceres's calibration: 2000 different-people "
        "pairs (test pairs) show a false-accept rate of at most 0.15% at best (95% confidence, even with none "
        "accepted); set FACESERVE_IDENTITY_FAR to 0.0015 or more, calibrate on a larger set, or set "
        "FACESERVE_IDENTITY_THRESHOLD")
    with pytest.raises(CalibrationRefused, match="faceres:1 has none"):
        operating_point(faceres(), None, far_target=0.01, threshold=None)
    with pytest.raises(CalibrationRefused, match="both set"):
        operating_point(faceres(), calibration, far_target=0.01, threshold=0.6)
    with pytest.raises(CalibrationRefused, match="FACESERVE_IDENTITY_FAR=1.5 is no false-accept rate"):
        operating_point(faceres(), calibration, far_target=1.5, threshold=None)


def test_a_calibration_applies_to_the_model_file_and_recipe_it_measured(calibration, tmp_path):
    model = tmp_path / "model.onnx"
    model.write_bytes(b"the measured model")
    folder = tmp_path / "calibrations"
    folder.mkdir()
    measured = dataclasses.replace(calibration, model_sha256=file_sha256(model), recipe=faceres().describe()["input"])
    (folder / "faceres.json").write_text(measured.to_json())
    assert calibration_for(faceres(), model, folder) == measured  # the JSON round trip keeps every field
    assert calibration_for(faceres(crop=CropRecipe(margin=0.2, square=True)), model, folder) is None  # re-cropped
    assert calibration_for(faceres(name="embedding_dlib"), model, folder) is None
    assert calibration_for(faceres(), tmp_path / "absent.onnx", folder) is None  # a remote Triton's repository
    other = tmp_path / "int8.onnx"
    other.write_bytes(b"a quantized model")
    assert calibration_for(faceres(), other, folder) is None


def test_the_committed_calibration_follows_its_model_through_a_rebuild_but_not_into_int8(tmp_path):
    """`convert` writes other bytes for the same model on another machine (a fresh clone's FaceRes differed in
    184,632 bytes from the one measured): a rebuild that answers the probe as the measured file did keeps the
    calibration; the same model quantized to INT8 does not."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from faceserve.models.repository import Repository
    from faceserve.settings import PROJECT_ROOT

    repository = Repository.load(PROJECT_ROOT / "model_repository")
    if repository.embedding is None:
        pytest.skip("the repository has no embedding model built (make repository)")
    # the serving model (embedding_dlib) and faceres beside it: each has its calibration committed
    assert {spec.name for spec in [repository.embedding, *repository.earlier_embeddings]} >= {"embedding_dlib",
                                                                                             "faceres"}
    for spec in [repository.embedding, *repository.earlier_embeddings]:
        built = repository.model_file(spec.name)
        committed = calibration_for(spec, built)
        assert committed is not None and committed.model == spec.name
        assert len(committed.probe) == spec.output_dims[0][-1]  # the model's descriptor of the probe input
        rebuilt = onnx.load(str(built))
        rebuilt.producer_name = "another machine's convert"
        onnx.save(rebuilt, str(tmp_path / "rebuilt.onnx"))
        assert file_sha256(tmp_path / "rebuilt.onnx") != committed.model_sha256
        assert calibration_for(spec, tmp_path / "rebuilt.onnx") == committed
        quantize_dynamic(str(built), str(tmp_path / "int8.onnx"), weight_type=QuantType.QInt8)
        assert calibration_for(spec, tmp_path / "int8.onnx") is None


def test_the_far_target_is_read_from_its_variable(monkeypatch):
    monkeypatch.delenv("FACESERVE_IDENTITY_FAR", raising=False)
    assert Settings.from_env().identity_far is None
    monkeypatch.setenv("FACESERVE_IDENTITY_FAR", "0.005")
    assert Settings.from_env().identity_far == 0.005
