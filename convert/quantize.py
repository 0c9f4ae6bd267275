"""INT8 versions of repository models for CPU hosts: onnxruntime's static quantization, calibrated on real faces
cropped as the pipeline crops them, kept only within the model's parity budget (docs/models.md, "INT8 versions").

Calibration and evaluation use different photos: the ranges are calibrated on the fixtures' photos without hand
boxes (and, for heads, on every face Haar finds in them); the budget is judged on the labelled detection set (its 43
hand-boxed faces, or detection itself for a detector) and on the identity set's faces, which calibration never saw.
"""

from __future__ import annotations

import dataclasses
import itertools
import tempfile
import time
from pathlib import Path
from typing import Callable

import numpy as np
import onnxruntime as ort

from faceserve.dev import accuracy, photos
from faceserve.models import crops, tasks
from faceserve.models.decoder import decoder_for
from faceserve.models.detectors import HaarDetector
from faceserve.models.landmarks import LandmarkModel
from faceserve.models.spec import ModelSpec

QUANTIZED = "int8"  # build.json's `quantized` for a version made here
QUANT_FORMAT = "QOperator"  # onnxruntime's QuantFormat: measured faster than QDQ on these cores (docs/models.md)
CALIBRATION_BATCH = 8
UNLABELLED_DETECTION_PHOTOS = ("bald_guys.jpg", "Tom_Cruise_avp_2014_4.jpg")


@dataclasses.dataclass(frozen=True)
class Budget:
    """How far an INT8 version may answer differently from the float one it comes from."""

    top1_agreement: float = 0.97  # labelled heads and classifiers: share of real inputs keeping their label
    mean_abs_diff: float = 1.0  # regression heads: mean |float - INT8| answer, in the model's units (age: years)
    detection_points: float = 0.02  # detectors: largest loss of recall, and of precision, on the labelled set
    embedding_cosine: float = 0.99  # embeddings: least cosine between a face's float and INT8 descriptor, and ...
    verification_points: float = 0.5  # ... largest loss of same-person/different-people accuracy on the identity
    # pairs, in points (the float model's decisions at its threshold against the INT8 one's)
    landmark_error: float = 0.01  # landmarks: mean point shift as a fraction of the crop side; presence as top-1


BUDGET_HELP = {
    "top1_agreement": "labelled heads, classifiers, landmark presence: least share of real inputs keeping their label",
    "mean_abs_diff": "regression heads: largest mean difference from the float answer, in the model's units",
    "detection_points": "detectors: largest loss of recall, and of precision, on the labelled set",
    "embedding_cosine": "embeddings: least cosine to the float descriptor on real face crops",
    "verification_points": "embeddings: largest loss of verification accuracy on the identity pairs, in points",
    "landmark_error": "landmarks: largest mean point shift, as a fraction of the crop side",
}


class QuantizeError(ValueError):
    """The model cannot be quantized as asked; the message says why."""


@dataclasses.dataclass
class Outcome:
    onnx_bytes: bytes
    figures: dict  # the parity figures the budget is judged on
    problems: list[str]  # why the INT8 version must not be written; empty when it may
    calibration_inputs: int


# ---- real inputs, made as the pipeline makes them -------------------------------------------------------

def _face_rows(spec: ModelSpec, image: np.ndarray, boxes) -> np.ndarray:
    if spec.task == tasks.LANDMARKS:
        return LandmarkModel(spec).batch(image, boxes)[0]
    return crops.face_batch(image, boxes, spec)


def _unlabelled_photos() -> list[np.ndarray]:
    found = list(photos.face_photos().values())
    found += [photos.load_rgb(accuracy.DETECTION_SET / name) for name in UNLABELLED_DETECTION_PHOTOS
              if (accuracy.DETECTION_SET / name).exists()]
    return found


def calibration_inputs(spec: ModelSpec) -> list[np.ndarray]:
    """Model inputs from the photos the budget is not judged on (one array per input shape)."""
    scenes = _unlabelled_photos()
    if spec.task == tasks.DETECTOR:
        detector = decoder_for(spec)
        return [batch for image in scenes for batch in detector.model_inputs(spec, image)]
    if spec.task == tasks.CLASSIFIER:
        scenes += list(photos.no_face_photos().values())
        return [crops.whole_image(image, spec)[0] for image in scenes]
    haar = HaarDetector()
    rows = [_face_rows(spec, image, [d.box for d in haar.detect_sync(image)]) for image in scenes]
    return [np.concatenate([r for r in rows if len(r)])]


def _identity_faces() -> list[tuple[str, np.ndarray]]:
    """(person, image) for each single-face photo of the identity set (the similarity benchmark's)."""
    from benchmarks.similarity import labelled_faces

    return [(person, image) for person, _, image in labelled_faces()]


def _largest_haar_box(image: np.ndarray):
    found = HaarDetector().detect_sync(image)
    return max((d.box for d in found), key=lambda b: (b[2] - b[0]) * (b[3] - b[1])) if found else None


def evaluation_rows(spec: ModelSpec) -> tuple[np.ndarray, list[str]]:
    """Face rows the budget is judged on, and the person of each identity-set row ("" for the others)."""
    rows, people = [], []
    for photo in accuracy.labelled_photos():
        rows.append(_face_rows(spec, photo.image, photo.faces))
        people += [""] * len(photo.faces)
    for person, image in _identity_faces():
        box = _largest_haar_box(image)
        if box is not None:
            rows.append(_face_rows(spec, image, [box]))
            people.append(person)
    if not rows:
        raise QuantizeError("no labelled faces to judge the INT8 version on: ../shared/fixtures/detection and "
                            "identity are absent")
    return np.concatenate(rows), people


# ---- running and judging --------------------------------------------------------------------------------

def session(onnx: bytes | str, threads: int = 1) -> ort.InferenceSession:
    """A session as the service opens one (`faceserve.backends.onnx`): one intra-op thread by default."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(onnx, options, providers=["CPUExecutionProvider"])


def run_rows(spec: ModelSpec, sess: ort.InferenceSession, rows: np.ndarray, batch: int = 16) -> dict[str, np.ndarray]:
    parts = [sess.run(list(spec.output_names), {spec.input_name: rows[i:i + batch]})
             for i in range(0, len(rows), batch)]
    return {name: np.concatenate([p[k] for p in parts]) for k, name in enumerate(spec.output_names)}


class _Backend:
    """The backend interface a model detector calls (`infer(spec, batch)`), over one session."""

    def __init__(self, sess: ort.InferenceSession):
        self._session = sess

    async def infer(self, spec: ModelSpec, batch: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(spec.output_names, self._session.run(list(spec.output_names), {spec.input_name: batch})))


def detection_accuracy(spec: ModelSpec, sess: ort.InferenceSession) -> accuracy.Matching:
    """The model's detector on the labelled set and the faceless photos (whose every box is stray)."""
    import asyncio

    detector = decoder_for(spec)(spec, _Backend(sess))
    total = accuracy.Matching(0, 0, 0)
    for photo in accuracy.labelled_photos():
        found = asyncio.run(detector.detect(photo.image))
        total += accuracy.match([d.box for d in found], photo.faces)
    for image in accuracy.faceless_photos().values():
        total += accuracy.Matching(0, 0, len(asyncio.run(detector.detect(image))))
    return total


def _judge_detector(spec, float_session, int8_session, budget):
    before, after = detection_accuracy(spec, float_session), detection_accuracy(spec, int8_session)
    figures = {"faces": before.labelled, "recall": {"float": before.recall, "int8": after.recall},
               "precision": {"float": before.precision, "int8": after.precision}}
    problems = [f"{what} {figures[what]['int8']:.1%} is more than {budget.detection_points:.0%} below the float "
                f"model's {figures[what]['float']:.1%}" for what in ("recall", "precision")
                if figures[what]["float"] - figures[what]["int8"] > budget.detection_points + 1e-9]
    return figures, problems


def _top1(spec, want, got) -> float:
    decoder = decoder_for(spec)
    same = decoder.agree(decoder.decisions(spec, want), decoder.decisions(spec, got))
    return float(same.reshape(len(same), -1).all(axis=1).mean())


def embedding_verdict(float_vectors: np.ndarray, int8_vectors: np.ndarray, people: list[str], threshold: float,
                      budget: Budget) -> tuple[dict, list[str]]:
    """The embedding parity mode: each face's cosine between its float and INT8 descriptor, and the same-person /
    different-people decisions (similarity >= `threshold`) on every pair of the faces with a person, float against
    INT8; refused below `budget.embedding_cosine` or more than `budget.verification_points` of accuracy lost."""
    a, b = (v / np.linalg.norm(v, axis=1, keepdims=True) for v in (float_vectors, int8_vectors))
    cosine = (a * b).sum(axis=1)
    labelled = [i for i, person in enumerate(people) if person]
    pairs = list(itertools.combinations(labelled, 2))
    changed = sum((a[i] @ a[j] >= threshold) != (b[i] @ b[j] >= threshold) for i, j in pairs)
    correct = {side: sum((v[i] @ v[j] >= threshold) == (people[i] == people[j]) for i, j in pairs) / len(pairs)
               for side, v in (("float", a), ("int8", b))}
    figures = dict(cosine_min=float(cosine.min()), cosine_mean=float(cosine.mean()), pairs=len(pairs),
                   threshold=threshold, decisions_changed=int(changed), verification_accuracy=correct)
    problems = []
    if cosine.min() < budget.embedding_cosine:
        problems.append(f"cosine to the float descriptor {cosine.min():.4f} < {budget.embedding_cosine}")
    lost = (correct["float"] - correct["int8"]) * 100
    if lost > budget.verification_points + 1e-9:
        problems.append(f"verification accuracy {correct['int8']:.1%} is {lost:.1f} points below the float "
                        f"model's {correct['float']:.1%} ({changed} of {len(pairs)} decisions changed; at most "
                        f"{budget.verification_points:g} points)")
    return figures, problems


def _judge_faces(spec, float_session, int8_session, budget):
    rows, people = evaluation_rows(spec)
    want, got = run_rows(spec, float_session, rows), run_rows(spec, int8_session, rows)
    first = spec.output_names[0]
    figures: dict = {"faces": len(rows)}
    problems = []
    if spec.task == tasks.EMBEDDING:
        verdict, problems = embedding_verdict(want[first], got[first], people, spec.score_threshold, budget)
        figures.update(verdict)
    elif spec.task == tasks.LANDMARKS:
        shift = float(np.abs(want[first] - got[first]).mean() / spec.width)
        agreement = _top1(spec, want, got)
        figures.update(mean_point_shift=shift, presence_agreement=agreement)
        if shift > budget.landmark_error:
            problems.append(f"mean point shift {shift:.2%} of the crop > {budget.landmark_error:.0%}")
        if agreement < budget.top1_agreement:
            problems.append(f"presence agreement {agreement:.1%} < {budget.top1_agreement:.0%}")
    elif spec.decoder == "regression":
        diff = np.abs(want[first] - got[first]).reshape(len(rows), -1)[:, 0]
        figures.update(mean_abs_diff=float(diff.mean()), max_abs_diff=float(diff.max()), units=spec.units)
        if diff.mean() > budget.mean_abs_diff:
            problems.append(f"mean abs difference {diff.mean():.2f} {spec.units} > {budget.mean_abs_diff:g}")
    else:
        agreement = _top1(spec, want, got)
        figures.update(top1_agreement=agreement)
        if agreement < budget.top1_agreement:
            problems.append(f"top-1 agreement {agreement:.1%} < {budget.top1_agreement:.0%}")
    return figures, problems


def _judge_classifier(spec, float_session, int8_session, budget):
    scenes = list(photos.face_photos().values()) + list(accuracy.faceless_photos().values())
    rows = np.concatenate([crops.whole_image(image, spec)[0] for image in scenes])
    agreement = _top1(spec, run_rows(spec, float_session, rows), run_rows(spec, int8_session, rows))
    problems = [f"top-1 agreement {agreement:.1%} < {budget.top1_agreement:.0%}"] \
        if agreement < budget.top1_agreement else []
    return {"images": len(rows), "top1_agreement": agreement}, problems


def judge(spec: ModelSpec, float_onnx: bytes, int8_onnx: bytes, budget: Budget) -> tuple[dict, list[str]]:
    """The parity figures of an INT8 model against its float one, and where they break the budget."""
    judges: dict[str, Callable] = {tasks.DETECTOR: _judge_detector, tasks.CLASSIFIER: _judge_classifier}
    return judges.get(spec.task, _judge_faces)(spec, session(float_onnx), session(int8_onnx), budget)


# ---- quantizing ------------------------------------------------------------------------------------------

def _output_nodes(path: Path) -> list[str]:
    """The nodes that write the model's outputs: kept in float, so that answers keep their precision (a quantized
    softmax answers scores in steps of 1/256)."""
    import onnx

    model = onnx.load(str(path))
    outputs = {o.name for o in model.graph.output}
    return [node.name for node in model.graph.node if outputs & set(node.output)]


def clip_pairs_as_clip(onnx_bytes: bytes) -> tuple[bytes, int]:
    """The model with each `Max(Min(x, high), low)` of scalar constants written as one `Clip(x, low, high)` (the
    same function), and how many were. TensorFlow exports ReLU6 as Relu, Min, Max (faceres: 27 times);
    onnxruntime's quantizer folds a Relu or a Clip that follows a quantized convolution into it, never a Min/Max
    pair, which it quantizes as two more operators, each with its own rounding, around every convolution."""
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load_from_string(onnx_bytes)
    graph = model.graph
    constants = {i.name: numpy_helper.to_array(i) for i in graph.initializer if int(np.prod(i.dims)) == 1}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    outputs = {o.name for o in graph.output}
    rewritten = 0
    replaced: dict[int, object] = {}  # id(Max node) -> the Clip node that takes its place
    dropped: set[int] = set()
    for node in graph.node:
        if node.op_type != "Min" or len(node.input) != 2 or node.input[1] not in constants:
            continue
        after = consumers.get(node.output[0], [])
        if len(after) != 1 or node.output[0] in outputs:
            continue
        (pair,) = after
        if pair.op_type != "Max" or len(pair.input) != 2 or pair.input[0] != node.output[0] \
                or pair.input[1] not in constants:
            continue
        low, high = (float(constants[name].reshape(())) for name in (pair.input[1], node.input[1]))
        if low > high:
            continue
        bounds = []
        for side, value in (("low", low), ("high", high)):
            name = f"{pair.output[0]}/clip_{side}"
            graph.initializer.append(numpy_helper.from_array(np.array(value, np.float32), name))
            bounds.append(name)
        replaced[id(pair)] = helper.make_node("Clip", [node.input[0], *bounds], list(pair.output),
                                              name=f"{pair.name or pair.output[0]}/clip")
        dropped.add(id(node))
        rewritten += 1
    kept = [replaced.get(id(node), node) for node in graph.node if id(node) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    used = {name for node in kept for name in node.input}
    unused = [i for i in graph.initializer if i.name not in used]
    for initializer in unused:
        graph.initializer.remove(initializer)
    return model.SerializeToString(), rewritten


def quantize(spec: ModelSpec, float_onnx: bytes, budget: Budget = Budget(),
             quant_format: str = QUANT_FORMAT) -> Outcome:
    """The INT8 model (activations uint8, weights int8 per channel, ranges from MinMax over real inputs) and
    its parity figures against `float_onnx`."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    inputs = calibration_inputs(spec)
    batches = iter([{spec.input_name: a[i:i + CALIBRATION_BATCH]}
                    for a in inputs for i in range(0, len(a), CALIBRATION_BATCH)])

    class Reader(CalibrationDataReader):
        def get_next(self):
            return next(batches, None)

    with tempfile.TemporaryDirectory(prefix="quantize-") as folder:
        source, prepared, target = (Path(folder) / n for n in ("float.onnx", "prepared.onnx", "int8.onnx"))
        source.write_bytes(clip_pairs_as_clip(float_onnx)[0])
        # shapes inferred (ONNX's own inference: the symbolic one needs sympy), the graph folded: onnxruntime's advice
        quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
        quantize_static(str(prepared), str(target), Reader(), quant_format=QuantFormat[quant_format],
                        per_channel=True, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        nodes_to_exclude=_output_nodes(prepared),
                        extra_options={"CalibTensorRangeSymmetric": False})
        int8_onnx = target.read_bytes()
    figures, problems = judge(spec, float_onnx, int8_onnx, budget)
    return Outcome(int8_onnx, figures, problems, sum(len(a) for a in inputs))


def ms_per_batch(spec: ModelSpec, models: dict[str, bytes], batches: list[np.ndarray],
                 seconds: float = 1.0) -> dict[str, dict[int, float]]:
    """Median ms per call of each model on each batch, in one process, one intra-op thread, the models taking
    turns call by call so that a shared machine's load falls on all of them alike."""
    sessions = {name: session(onnx) for name, onnx in models.items()}
    times: dict[tuple[str, int], list[float]] = {(n, len(b)): [] for n in sessions for b in batches}
    for sess in sessions.values():  # warm up
        for batch in batches:
            sess.run(None, {spec.input_name: batch})
    deadline = time.perf_counter() + seconds * len(sessions) * len(batches)
    while time.perf_counter() < deadline or min(map(len, times.values())) < 5:
        for batch in batches:
            for name, sess in sessions.items():
                start = time.perf_counter()
                sess.run(None, {spec.input_name: batch})
                times[(name, len(batch))].append((time.perf_counter() - start) * 1000)
    return {name: {len(b): float(np.median(times[(name, len(b))])) for b in batches} for name in sessions}
