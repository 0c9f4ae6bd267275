"""Does the ONNX model answer what the source framework answers? On random and real inputs.

What is compared is the decoder's to say (`faceserve.models.decoder`): the outputs as its decoding reads
them, and the decision each sample leads to; which real inputs a model gets is its task's.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import onnxruntime as ort

from faceserve.dev import photos
from faceserve.models import crops, tasks
from faceserve.models.decoder import decoder_for
from faceserve.models.detectors import HaarDetector
from faceserve.models.spec import ModelSpec

DEFAULT_TOLERANCE = 1e-4
# The raw tensors' gate. Only BlazeFace's differ from what the pipeline consumes (`BlazeFace.consumed`): its
# logits reach several hundred and its regressors are pixels, where float32 rounding alone is ~3e-5
# per operation; measured 5.95e-04 at build time (TFLite vs onnxruntime), so 2e-3 leaves ~3x headroom
# while still catching a wrong op, which moves them by whole units.
DEFAULT_RAW_TOLERANCE = 2e-3


@dataclasses.dataclass
class ParityResult:
    max_abs_diff: float  # on what the pipeline consumes (the decoder's `consumed`); inf when an output is not finite
    top1_agreement: float
    samples: dict[str, int]
    raw_max_abs_diff: float  # on the raw output tensors
    non_finite: list[str] = dataclasses.field(default_factory=list)  # "source x" / "ONNX x": NaN or inf seen

    def line(self) -> str:
        counts = ", ".join(f"{v} {k}" for k, v in self.samples.items())
        raw = f" (raw tensors {self.raw_max_abs_diff:.2e})" if self.raw_max_abs_diff != self.max_abs_diff else ""
        bad = f"NaN or inf in {', '.join(self.non_finite)}; " if self.non_finite else ""
        return (f"{bad}max abs diff {self.max_abs_diff:.2e}{raw}, top-1 agreement "
                f"{self.top1_agreement:.1%} ({counts})")

    def problems(self, tolerance: float, raw_tolerance: float) -> list[str]:
        """Why this conversion must not be written; empty when it may."""
        found = []
        if self.non_finite:
            found.append(f"NaN or inf in {', '.join(self.non_finite)}")
        if not self.max_abs_diff <= tolerance:
            found.append(f"max abs diff {self.max_abs_diff:.2e} > tolerance {tolerance:g}")
        if not self.raw_max_abs_diff <= raw_tolerance:
            found.append(f"raw tensors {self.raw_max_abs_diff:.2e} > raw tolerance {raw_tolerance:g}")
        if self.top1_agreement < 1.0:
            found.append(f"top-1 agreement {self.top1_agreement:.1%} < 100%")
        return found


def real_inputs(spec: ModelSpec) -> list[np.ndarray]:
    """Model inputs made from real photos by the model's own recipe (face crops for heads; for a
    detector, what it gives its model: one array per input shape)."""
    images = photos.face_photos()
    if spec.task == tasks.DETECTOR:
        scenes = list(images.values()) + list(photos.no_face_photos().values())
        detector = decoder_for(spec)
        return [batch for image in scenes for batch in detector.model_inputs(spec, image)]
    if spec.task == tasks.CLASSIFIER:
        scenes = list(images.values()) + list(photos.no_face_photos().values())
        return [np.concatenate([crops.whole_image(image, spec)[0] for image in scenes])]
    haar = HaarDetector()
    return [np.concatenate([crops.face_batch(image, [d.box for d in haar.detect_sync(image)], spec)
                            for image in images.values()])]


# A dynamic-size model (any H x W) is checked on random inputs of this size.
RANDOM_SIZE = (256, 384)


def random_inputs(spec: ModelSpec, count: int = 16, seed: int = 0) -> list[np.ndarray]:
    shape = tuple(given if given > 0 else RANDOM_SIZE[i] for i, given in enumerate(spec.input_shape[:2]))
    pixels = np.random.default_rng(seed).uniform(0, 255, (count, *shape, spec.channels))
    return [(pixels * spec.scale + spec.offset).astype(np.float32)]


def random_pixel_inputs(spec: ModelSpec, count: int = 16, seed: int = 0) -> list[np.ndarray]:
    """Random images of whole 8-bit pixel values, scaled by the recipe: the random set of a source that takes only
    8-bit pixels (dlib, `convert.dlib.parity_samples`), where `random_inputs`' fractions have no equal."""
    pixels = np.random.default_rng(seed).integers(0, 256, (count, *spec.input_shape[:2], spec.channels))
    return [(pixels * spec.scale + spec.offset).astype(np.float32)]


def _batches(arrays: list[np.ndarray], batch_size: int):
    for array in arrays:
        for start in range(0, len(array), batch_size):
            yield array[start:start + batch_size]


def _max_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    """inf when either side is not finite: `max(x, nan)` would silently keep x."""
    with np.errstate(invalid="ignore"):  # inf - inf is NaN, reported as inf below
        diff = np.abs(a - b)
    return float(diff.max()) if np.isfinite(diff).all() else math.inf


def check(spec: ModelSpec, source_run, onnx_bytes: bytes, batch_size: int = 8,
          sets: dict[str, list[np.ndarray]] | None = None) -> ParityResult:
    """`sets`: the source's own samples by set name (`SourceModel.samples`), else random and real inputs."""
    decoder = decoder_for(spec)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    sets = sets or {"random": random_inputs(spec), "real": real_inputs(spec)}
    max_diff, raw_diff, agree, total = 0.0, 0.0, 0, 0
    non_finite: set[tuple[str, str]] = set()
    for inputs in sets.values():
        for batch in _batches(inputs, batch_size):
            expected = source_run(batch)
            actual = dict(zip(spec.output_names, session.run(list(spec.output_names), {spec.input_name: batch})))
            for side, outputs in (("source", expected), ("ONNX", actual)):
                non_finite.update((side, n) for n in spec.output_names if not np.isfinite(outputs[n]).all())
            used_expected, used_actual = decoder.consumed(spec, expected), decoder.consumed(spec, actual)
            for name in spec.output_names:
                raw_diff = max(raw_diff, _max_abs_diff(expected[name], actual[name]))
                max_diff = max(max_diff, _max_abs_diff(used_expected[name], used_actual[name]))
            same = decoder.agree(decoder.decisions(spec, expected), decoder.decisions(spec, actual))
            agree += int(same.reshape(len(batch), -1).all(axis=1).sum())
            total += len(batch)
    named = [f"{side} {n}" for side in ("source", "ONNX") for n in spec.output_names if (side, n) in non_finite]
    return ParityResult(max_diff, agree / total, {k: sum(map(len, v)) for k, v in sets.items()}, raw_diff, named)
