"""The task and decoder vocabularies: each declared once, and a new decoder is one new module."""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from convert import parity
from convert.__main__ import main as convert_main
from faceserve.models import decoder, detectors, heads, tasks
from faceserve.models.decoder import decoder_for, decoders, sigmoid
from faceserve.models.spec import ModelSpec, SpecError


def spec(decoder_name: str, task: str = "field", outputs: tuple[str, ...] = ("out",),
         dims: tuple[tuple[int, ...], ...] = ((2,),), **fields) -> ModelSpec:
    shape = {"height": 4, "width": 4, "channels": 3, **fields}
    return ModelSpec(name="m", task=task, decoder=decoder_name, input_name="input", output_names=outputs,
                     output_dims=dims, colour="rgb", scale=1.0, offset=0.0, **shape)


def test_every_decoder_of_every_role_is_known_by_one_name():
    assert list(decoders()) == ["blazeface", "blazeface_full", "embedding", "faceboxes", "facemesh", "regression",
                                "sigmoid", "softmax"]
    assert {name: cls.__name__ for name, cls in decoders().items()} == {
        "blazeface": "BlazeFace", "blazeface_full": "BlazeFaceFull", "embedding": "EmbeddingHead",
        "faceboxes": "FaceBoxes", "facemesh": "LandmarkModel", "regression": "RegressionHead", "sigmoid": "SigmoidHead",
        "softmax": "SoftmaxHead"}
    assert set(heads.REGISTRY) == {"embedding", "regression", "sigmoid", "softmax"}
    assert [cls.name for cls in detectors.REGISTRY] == ["auto", "faceboxes", "blazeface", "blazeface_full", "haar"]


def test_an_unknown_decoder_is_refused_by_name():
    with pytest.raises(SpecError,
                       match=r"m: decoder 'cluster' is unknown \(known: blazeface, blazeface_full, embedding, "):
        decoder_for(spec("cluster"))


def test_a_decoder_must_declare_its_parity_decisions_and_its_name_once():
    with pytest.raises(TypeError, match="Undecided decodes 'undecided' but does not declare its parity"):
        type("Undecided", (heads.Head,), {"decoder": "undecided", "answer": lambda self, row: 0})
    with pytest.raises(TypeError, match="decoder 'softmax' is declared twice"):
        type("Twin", (heads.Head,), {"decoder": "softmax", "answer": lambda self, row: 0,
                                     "decisions": staticmethod(lambda s, o: o)})
    assert "undecided" not in decoders() and decoders()["softmax"] is heads.REGISTRY["softmax"]


@pytest.mark.parametrize("name,outputs,want", [
    ("softmax", {"out": np.array([[0.1, 0.9], [0.8, 0.2]])}, [1, 0]),
    ("sigmoid", {"out": np.array([[0.2], [0.5]])}, [False, True]),
    ("regression", {"out": np.array([[31.5], [7.0]])}, [31.5, 7.0]),
    ("embedding", {"out": np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])}, [2, 2, 0]),  # each one's nearest
])
def test_each_head_decoder_declares_the_decision_parity_counts(name, outputs, want):
    assert decoder_for(spec(name)).decisions(spec(name), outputs).tolist() == want


def test_detector_and_landmark_decoders_decide_on_their_scores():
    blazeface = spec("blazeface", "face_detector", ("regressors", "classificators"), ((896, 16), (896, 1)))
    logits = np.zeros((1, 896, 1))
    logits[0, 3] = 0.5
    decided = decoder_for(blazeface).decisions(blazeface, {"regressors": np.zeros((1, 896, 16)),
                                                           "classificators": logits})
    assert decided.shape == (1, 896) and np.flatnonzero(decided).tolist() == [3]
    faceboxes = spec("faceboxes", "face_detector", ("boxes", "scores"), ((-1, 4), (-1,)), score_threshold=0.5)
    kept = decoder_for(faceboxes).decisions(faceboxes, {"boxes": np.zeros((1, 3, 4)),
                                                        "scores": np.array([[0.4, 0.6, 0.5]])})
    assert kept.tolist() == [[False, True, False]]
    mesh = spec("facemesh", "landmarks", ("mesh", "face_flag"), ((1404,), (1,)), width=192)
    outputs = {"mesh": np.full((2, 1404), 96.0), "face_flag": np.array([[-3.0], [7.0]])}
    assert decoder_for(mesh).decisions(mesh, outputs).tolist() == [[False], [True]]
    consumed = decoder_for(mesh).consumed(mesh, outputs)
    assert np.allclose(consumed["mesh"], 0.5) and consumed["face_flag"] is outputs["face_flag"]


def test_regression_agrees_within_its_tolerance_and_others_exactly():
    regression, softmax = decoder_for(spec("regression")), decoder_for(spec("softmax"))
    assert regression.agree(np.array([30.0, 30.0]), np.array([30.005, 30.02])).tolist() == [True, False]
    assert softmax.agree(np.array([1, 2]), np.array([1, 3])).tolist() == [True, False]


def test_sigmoid_keeps_the_dtype_and_survives_huge_logits():
    assert sigmoid(np.float32([0.0, 2.0])).dtype == np.float32
    np.testing.assert_allclose(sigmoid(np.array([0.0, 2.0, -1e4, 1e4])), [0.5, 1 / (1 + np.exp(-2.0)), 0.0, 1.0],
                               atol=1e-40)  # clipped at -100: no overflow warning, about 4e-44


def test_tasks_name_the_roles_and_anything_else_is_a_face_field():
    assert tasks.ROLE_TASKS == ("face_detector", "image_classifier", "landmarks", "embedding")
    assert tasks.is_head("emotion_fer48") and not tasks.is_head("landmarks")
    assert tasks.check_name("emotion_fer48") == "emotion_fer48"
    with pytest.raises(ValueError, match="neither one of face_detector, image_classifier, landmarks, embedding"):
        tasks.check_name("two words")
    assert spec("blazeface", "face_detector", score_threshold=0.7, nms_iou=0.3).describe()["nms_iou"] == 0.3
    assert "nms_iou" not in spec("embedding", "embedding").describe()


def test_convert_offers_every_decoder_and_any_face_field_as_task(capsys, caplog):
    with pytest.raises(SystemExit) as shown:
        convert_main(["model", "--help"])
    assert shown.value.code == 0
    usage = " ".join(capsys.readouterr().out.split())
    assert "--decoder {blazeface,blazeface_full,embedding,faceboxes,facemesh,regression,sigmoid,softmax}" in usage
    assert convert_main(["model", "x.h5", "--name", "n", "--task", "two words", "--decoder", "softmax"]) == 2
    assert "refusing to convert n: task 'two words' is neither" in caplog.text
    assert "give --task a field name such as emotion_fer48" in caplog.text


NEW_HEAD = '''
import numpy as np

from faceserve.models.heads.base import Head


class ThresholdHead(Head):
    """A head answering whether its one output reaches 0.9."""

    decoder = "threshold"

    def answer(self, row):
        return bool(row[0] >= 0.9)

    @staticmethod
    def decisions(spec, outputs):
        return outputs[spec.output_names[0]][:, 0] >= 0.9
'''


@pytest.fixture
def new_head_module(tmp_path, monkeypatch):
    """`threshold.py` dropped beside the head modules (in a folder on the package's path) and nothing else."""
    folder = tmp_path / "heads"
    folder.mkdir()
    (folder / "threshold.py").write_text(textwrap.dedent(NEW_HEAD))
    monkeypatch.setattr(heads, "__path__", [*heads.__path__, str(folder)])
    monkeypatch.setattr(decoder, "_REGISTRY", dict(decoder._REGISTRY))
    yield
    sys.modules.pop("faceserve.models.heads.threshold", None)


def test_a_new_decoder_is_one_new_module(new_head_module, capsys):
    """Discovered by the package, it decodes, convert offers it, and parity compares by its own decisions."""
    decoder.import_modules(heads.__name__, heads.__path__)
    assert "threshold" in heads.discover() and "threshold" in decoders()
    head_spec = spec("threshold", "alert", dims=((1,),))
    assert heads.discover()["threshold"](head_spec).decode({"out": np.array([[0.95], [0.2]])}) == [True, False]
    with pytest.raises(SystemExit):
        convert_main(["model", "--help"])
    assert "faceboxes,facemesh,regression,sigmoid,softmax,threshold}" in " ".join(capsys.readouterr().out.split())

    def run(batch):  # a model whose answers all sit above 0.9, on each side of the comparison
        return {"out": np.full((len(batch), 1), 0.95, np.float32)}
    result = parity.check(head_spec, run, toy_onnx_constant(0.95))
    assert result.top1_agreement == 1.0 and result.max_abs_diff < 1e-6


def toy_onnx_constant(value: float) -> bytes:
    """An ONNX model [N, 4, 4, 3] -> "out" [N, 1], every answer `value`."""
    import onnx
    from onnx import helper, numpy_helper
    nodes = [helper.make_node("Flatten", ["input"], ["flat"], axis=1),
             helper.make_node("MatMul", ["flat", "zeros"], ["nothing"]),
             helper.make_node("Add", ["nothing", "value"], ["out"])]
    graph = helper.make_graph(
        nodes, "constant", [helper.make_tensor_value_info("input", onnx.TensorProto.FLOAT, ["batch", 4, 4, 3])],
        [helper.make_tensor_value_info("out", onnx.TensorProto.FLOAT, ["batch", 1])],
        [numpy_helper.from_array(np.zeros((48, 1), np.float32), "zeros"),
         numpy_helper.from_array(np.float32([value]), "value")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8).SerializeToString()
