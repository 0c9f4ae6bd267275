"""An embedding model's calibration: what its similarity threshold stands for in false accepts and false rejects.

From labelled face pairs (same person / different people) a calibration holds the DET table: for every threshold
where the counts change, how many different-people pairs it accepts and how many same-person pairs it rejects, with
the pair counts and the set the pairs came from. A threshold is then chosen for a target false-accept rate
(FACESERVE_IDENTITY_FAR), and every answer says the operating point it was given at (`OperatingPoint`).

What a set can show is bounded by its size: 0 false accepts among N different-people pairs says the rate is at most
about 3/N (95 %, the "rule of three"), not that it is 0. So a threshold is chosen by the upper bound of its false-
accept rate (one-sided Clopper-Pearson at 95 %), and a target below what the set can resolve is refused rather than
claimed.

A calibration is committed per model under `faceserve/models/calibrations/` (written by `python -m
benchmarks.similarity calibrate`) and applies only to the model it measured, served with the input recipe it measured
(crop, colour, scale): the same file (its sha256), or a rebuild of it that answers a fixed probe input as the
measured file did (a fresh clone's `convert` writes other bytes for the same model). A quantized, retrained or
re-cropped model has no calibration until it is measured again, and its answers say its false-accept rate is unknown.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import numpy as np
from pydantic import BaseModel, Field

from faceserve.models.spec import ModelSpec

log = logging.getLogger(__name__)

CALIBRATIONS = Path(__file__).resolve().parent / "calibrations"
DEFAULT_FAR_TARGET = 0.001  # 0.1 %: chosen when FACESERVE_IDENTITY_FAR is not set, where the calibration can show it
CONFIDENCE = 0.95  # of the false-accept rate's upper bound
FAR_ENV = "FACESERVE_IDENTITY_FAR"
THRESHOLD_ENV = "FACESERVE_IDENTITY_THRESHOLD"

# How the served threshold was chosen (`OperatingPoint.chosen_by`)
BY_FAR_TARGET = "far_target"  # the least threshold whose false-accept bound meets the target
BY_SETTING = "identity_threshold"  # FACESERVE_IDENTITY_THRESHOLD, a raw cosine
BY_MODEL = "model"  # the model's own `score_threshold` (its recipe), the calibration unable to meet the target


class CalibrationRefused(SystemExit):
    """The configured target cannot be met (or the settings contradict each other): the service does not start.
    Raised at the import of service.py, so `bentoml serve` stops with this message and a non-zero status."""


class OperatingPoint(BaseModel):
    """The threshold answers are given at, and what it stands for on the model's calibration set."""
    threshold: float = Field(description="the same person at or above this cosine similarity")
    chosen_by: str = Field(description=f"'{BY_FAR_TARGET}': the least threshold whose false-accept rate's upper "
                                       f"bound meets far_target; '{BY_SETTING}': {THRESHOLD_ENV}; '{BY_MODEL}': the "
                                       "model's own threshold (its calibration cannot show far_target, or it has none)")
    far_target: float | None = Field(description=f"the false-accept rate asked for ({FAR_ENV}, default "
                                                  f"{DEFAULT_FAR_TARGET}); null with {THRESHOLD_ENV}")
    far: float | None = Field(description="false accepts / different-people pairs of the calibration set at the "
                                          "threshold; null: the model has no calibration (the rate is unknown)")
    far_upper: float | None = Field(description=f"the false-accept rate's upper bound at {CONFIDENCE:.0%} confidence "
                                                "(one-sided Clopper-Pearson): what the pairs can show; 0 of N is "
                                                "about 3/N, never 0")
    frr: float | None = Field(description="false rejects / same-person pairs of the calibration set at the "
                                          "threshold; null: unknown")
    false_accepts: int | None = None
    different_pairs: int | None = None
    false_rejects: int | None = None
    same_pairs: int | None = None
    calibration_set: str | None = Field(description="the set the rates were measured on; null: none")


def _binomial_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p), summed in log space (n may be large)."""
    if k >= n or p <= 0:
        return 1.0
    if p >= 1:
        return 0.0
    log_p, log_q, log_n = math.log(p), math.log1p(-p), math.lgamma(n + 1)
    terms = [log_n - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q for i in range(k + 1)]
    top = max(terms)
    return min(1.0, math.exp(top) * sum(math.exp(t - top) for t in terms))


def meets(false_accepts: int, pairs: int, far_target: float, confidence: float = CONFIDENCE) -> bool:
    """Whether `false_accepts` among `pairs` show a false-accept rate of at most `far_target`: the rate's upper
    bound is at most the target exactly when so few accepts would be unlikely (under 1 - confidence) at it."""
    return pairs > 0 and false_accepts < pairs and _binomial_cdf(false_accepts, pairs, far_target) <= 1 - confidence


def far_upper_bound(false_accepts: int, pairs: int, confidence: float = CONFIDENCE) -> float:
    """The one-sided Clopper-Pearson upper bound of a rate seen `false_accepts` times in `pairs` trials (0 of N:
    1 - (1 - confidence)^(1/N), about 3/N at 95 %); 1.0 without pairs."""
    if pairs <= 0 or false_accepts >= pairs:
        return 1.0
    if false_accepts == 0:
        return 1 - (1 - confidence) ** (1 / pairs)
    low, high = false_accepts / pairs, 1.0
    for _ in range(60):  # the CDF falls as the rate rises: bisect to where it is 1 - confidence
        middle = (low + high) / 2
        low, high = (middle, high) if _binomial_cdf(false_accepts, pairs, middle) > 1 - confidence else (low, middle)
    return high


TABLE = ("thresholds", "false_accepts", "false_rejects")  # a calibration's columns, stored as `det` rows


@dataclasses.dataclass(frozen=True)
class Calibration:
    """An embedding model's DET table on one labelled pair set. `thresholds` are every distinct score, ascending,
    and one just above the highest; at each, `false_accepts` counts the different-people pairs at or above it,
    `false_rejects` the same-person pairs below it (the counts change only at a score)."""
    model: str  # the model's name
    model_sha256: str  # of the model file measured: the calibration applies to that file only
    recipe: dict  # the input recipe measured (`ModelSpec.describe()["input"]`)
    calibration_set: str  # which pairs: the set's name and the rules its pairs were drawn by
    same_pairs: int
    different_pairs: int
    thresholds: tuple[float, ...]
    false_accepts: tuple[int, ...]
    false_rejects: tuple[int, ...]
    details: dict = dataclasses.field(default_factory=dict)  # what else the set records (faces, people, located by)
    probe: tuple[float, ...] = ()  # the measured model's descriptor of `probe_input`: what a rebuild must answer

    @classmethod
    def from_scores(cls, same: Iterable[float], different: Iterable[float], **about) -> "Calibration":
        """The table at every distinct score (to 6 decimals, as it is stored), and just above the highest (nothing
        accepted)."""
        same_scores, different_scores = (np.sort(np.round(np.asarray(list(scores), float), 6))
                                         for scores in (same, different))
        scores = np.unique(np.concatenate([same_scores, different_scores]))
        if not len(scores):
            raise ValueError("a calibration needs pairs")
        thresholds = np.concatenate([scores, scores[-1:] + 1e-4])
        accepts = len(different_scores) - np.searchsorted(different_scores, thresholds, side="left")
        rejects = np.searchsorted(same_scores, thresholds, side="left")
        return cls(same_pairs=len(same_scores), different_pairs=len(different_scores),
                   thresholds=tuple(round(float(t), 6) for t in thresholds),
                   false_accepts=tuple(int(n) for n in accepts), false_rejects=tuple(int(n) for n in rejects),
                   **about)

    def counts_at(self, threshold: float) -> tuple[int, int]:
        """(false accepts, false rejects) at any threshold: those of the first row at or above it (no score lies
        between the two, so they accept the same pairs)."""
        row = int(np.searchsorted(self.thresholds, threshold, side="left"))
        if row == len(self.thresholds):  # above every score: nothing accepted
            return 0, self.same_pairs
        return self.false_accepts[row], self.false_rejects[row]

    def least_resolvable_far(self) -> float:
        """The lowest false-accept rate these pairs can show: the bound of 0 false accepts among them."""
        return far_upper_bound(0, self.different_pairs)

    def threshold_for(self, far_target: float) -> float | None:
        """The least threshold whose false-accept rate's upper bound is at most `far_target`: the middle of the gap
        below the first row that meets it (the whole gap accepts the same pairs as that row, and its middle commits
        to neither pair beside it); None when even no false accept among these pairs cannot show so low a rate."""
        # the accepts fall as the threshold rises: bisect for the first row that meets the target
        low, high = 0, len(self.thresholds)
        while low < high:
            middle = (low + high) // 2
            if meets(self.false_accepts[middle], self.different_pairs, far_target):
                high = middle
            else:
                low = middle + 1
        if low == len(self.thresholds):
            return None
        return self.thresholds[0] if low == 0 else round((self.thresholds[low - 1] + self.thresholds[low]) / 2, 6)

    def point(self, threshold: float, chosen_by: str, far_target: float | None) -> OperatingPoint:
        accepts, rejects = self.counts_at(threshold)
        return OperatingPoint(
            threshold=threshold, chosen_by=chosen_by, far_target=far_target,
            far=round(accepts / self.different_pairs, 6) if self.different_pairs else None,
            far_upper=round(far_upper_bound(accepts, self.different_pairs), 6) if self.different_pairs else None,
            frr=round(rejects / self.same_pairs, 6) if self.same_pairs else None,
            false_accepts=accepts, different_pairs=self.different_pairs, false_rejects=rejects,
            same_pairs=self.same_pairs, calibration_set=self.calibration_set)

    def describe(self) -> dict:
        """For `/models`: where it comes from and what it can show (the table is in its committed file)."""
        return {"calibration_set": self.calibration_set, "same_pairs": self.same_pairs,
                "different_pairs": self.different_pairs, "least_resolvable_far": round(self.least_resolvable_far(), 6),
                "model_sha256": self.model_sha256, "rows": len(self.thresholds), **self.details}

    def to_json(self) -> str:
        """The fields, the probe's descriptor on one line, then the table as `det`: one [threshold, false accepts,
        false rejects] row a line."""
        about = {key: value for key, value in dataclasses.asdict(self).items() if key not in (*TABLE, "probe")}
        head = json.dumps(about, indent=1)[:-2]
        rows = ",\n".join(f"  {json.dumps(list(row))}" for row in zip(*(getattr(self, key) for key in TABLE)))
        return f'{head},\n "probe": {json.dumps(list(self.probe))},\n "det": [\n{rows}\n ]\n}}\n'

    @classmethod
    def from_json(cls, text: str) -> "Calibration":
        fields = json.loads(text)
        fields["probe"] = tuple(fields.get("probe", ()))
        columns = tuple(zip(*fields.pop("det"))) or ((), (), ())
        return cls(**fields, **{key: tuple(column) for key, column in zip(TABLE, columns)})


def unknown_point(threshold: float, chosen_by: str, far_target: float | None) -> OperatingPoint:
    """The operating point of a model without a calibration: its threshold, and nothing it stands for."""
    return OperatingPoint(threshold=threshold, chosen_by=chosen_by, far_target=far_target, far=None, far_upper=None,
                          frr=None, calibration_set=None)


@lru_cache(maxsize=8)
def _file_sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as model:
        for block in iter(lambda: model.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    stat = path.stat()
    return _file_sha256(path, stat.st_size, stat.st_mtime_ns)


# A rebuild of the same model answers as the calibrated one did: `convert`'s output is not byte for byte the same
# from one machine to the next (a fresh clone's FaceRes differs in 184,632 bytes from this one's), but its parity
# with the trained model holds to 1e-5. Measured on the probe: the two builds' descriptors are equal to 1e-7; FaceRes
# quantized to INT8 (onnxruntime, dynamic) answers it at cosine 0.847, and is not the model that was measured.
PROBE_COSINE = 0.9999
PROBE_SEED = 20261207


def probe_input(spec: ModelSpec) -> np.ndarray:
    """One input row in the model's own input space: fixed smooth noise (an 8x8 grid of random pixels 0..255 drawn
    up to the input's size; white noise leaves FaceRes' descriptor nearly all zeros, this one not), scaled as the
    model's recipe scales a crop."""
    import cv2

    grid = np.random.default_rng(PROBE_SEED).uniform(0, 255, size=(8, 8, spec.channels)).astype(np.float32)
    pixels = cv2.resize(grid, (spec.width, spec.height), interpolation=cv2.INTER_CUBIC).clip(0, 255)
    return pixels.reshape(1, *spec.input_shape) * np.float32(spec.scale) + np.float32(spec.offset)


@lru_cache(maxsize=8)
def _probe_answer(path: Path, size: int, mtime_ns: int, spec: ModelSpec) -> tuple[float, ...]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    descriptor = session.run([spec.output_names[0]], {spec.input_name: probe_input(spec)})[0][0].astype(np.float64)
    return tuple(round(float(v), 7) for v in descriptor / np.linalg.norm(descriptor))


def probe_answer(spec: ModelSpec, model_file: Path) -> tuple[float, ...]:
    """The model file's unit descriptor of `probe_input` (one onnxruntime run, remembered per file)."""
    stat = model_file.stat()
    return _probe_answer(model_file, stat.st_size, stat.st_mtime_ns, spec)


def answers_as_measured(calibration: "Calibration", spec: ModelSpec, model_file: Path) -> bool:
    """Whether this model file is the one the calibration measured: the same bytes, or a rebuild that answers the
    probe as it did (cosine at least `PROBE_COSINE`)."""
    if file_sha256(model_file) == calibration.model_sha256:
        return True
    if not calibration.probe:
        return False
    answer = probe_answer(spec, model_file)
    return len(answer) == len(calibration.probe) and float(np.dot(answer, calibration.probe)) >= PROBE_COSINE


def calibration_for(spec: ModelSpec, model_file: Path, folder: Path = CALIBRATIONS) -> Calibration | None:
    """The committed calibration of this model, served with this recipe: its file as measured, or rebuilt so that it
    answers as the measured one did (`answers_as_measured`); None when there is none (or the file is not here to be
    identified, as with a remote Triton's repository)."""
    if not model_file.is_file():
        return None
    recipe = spec.describe()["input"]
    for path in sorted(folder.glob("*.json")):
        calibration = Calibration.from_json(path.read_text())
        if (calibration.model, calibration.recipe) == (spec.name, recipe) and \
                answers_as_measured(calibration, spec, model_file):
            return calibration
    return None


def operating_point(spec: ModelSpec, calibration: Calibration | None, far_target: float | None,
                    threshold: float | None) -> OperatingPoint:
    """The threshold answers are given at, and what it stands for.

    - `threshold` (FACESERVE_IDENTITY_THRESHOLD): that raw cosine, with the rates it stands for if calibrated.
    - `far_target` (FACESERVE_IDENTITY_FAR): the least threshold whose false-accept bound meets it; refused
      (`CalibrationRefused`) when the model has no calibration or its pairs cannot show so low a rate: the
      operator asked for a guarantee, and a service that started anyway would answer without it.
    - neither: the default target (0.1 %) where the calibration can show it, else the model's own threshold,
      whose answers say the rates it stands for and that the target is not met (logged at start).
    """
    if threshold is not None and far_target is not None:
        raise CalibrationRefused(f"faceserve: {FAR_ENV} and {THRESHOLD_ENV} both set; set the false-accept rate "
                                 f"({FAR_ENV}) or a raw cosine ({THRESHOLD_ENV}), not both")
    if threshold is not None:
        return (calibration.point(threshold, BY_SETTING, None) if calibration
                else unknown_point(threshold, BY_SETTING, None))
    if far_target is not None and not 0 < far_target < 1:
        raise CalibrationRefused(f"faceserve: {FAR_ENV}={far_target:g} is no false-accept rate; give a fraction "
                                 "between 0 and 1 (0.001 for 0.1 %)")
    target = DEFAULT_FAR_TARGET if far_target is None else far_target
    if calibration is None:
        if far_target is not None:
            raise CalibrationRefused(
                f"faceserve: {FAR_ENV}={far_target:g} needs a calibration of the embedding model, and "
                f"{spec.name}:{spec.version} has none (a calibration applies to the model file it measured; "
                f"`python -m benchmarks.similarity calibrate` makes one, docs/identity.md); set {THRESHOLD_ENV} "
                "for a raw cosine instead")
        log.warning("%s:%s has no calibration: its threshold %g stands for an unknown false-accept rate",
                    spec.name, spec.version, spec.score_threshold)
        return unknown_point(spec.score_threshold, BY_MODEL, target)
    chosen = calibration.threshold_for(target)
    if chosen is not None:
        return calibration.point(chosen, BY_FAR_TARGET, target)
    least = calibration.least_resolvable_far()
    if far_target is not None:
        raise CalibrationRefused(
            f"faceserve: {FAR_ENV}={far_target:g} cannot be shown by {spec.name}'s calibration: "
            f"{calibration.different_pairs} different-people pairs ({calibration.calibration_set}) show a false-accept "
            f"rate of at most {least:.2%} at best ({CONFIDENCE:.0%} confidence, even with none accepted); set "
            f"{FAR_ENV} to {least:.4f} or more, calibrate on a larger set, or set {THRESHOLD_ENV}")
    point = calibration.point(spec.score_threshold, BY_MODEL, target)
    log.warning("%s's calibration (%d different-people pairs) cannot show a false-accept rate of %g (at best %.4f): "
                "serving its own threshold %g, FAR %.4f measured, at most %.4f", spec.name,
                calibration.different_pairs, target, least, spec.score_threshold, point.far, point.far_upper)
    return point


def served_operating_point(repository, far_target: float | None, threshold: float | None) -> OperatingPoint | None:
    """The operating point of the repository's embedding model (`Repository`); None without one."""
    spec = repository.embedding
    if spec is None:
        return None
    return operating_point(spec, calibration_for(spec, repository.model_file(spec.name)), far_target, threshold)



def earlier_operating_point(spec: ModelSpec, model_file: Path) -> OperatingPoint:
    """The operating point of an earlier embedding model (one that searches the identities enrolled under it,
    `Repository.earlier_embeddings`): its calibration's at the default FAR target, else its own threshold;
    FACESERVE_IDENTITY_FAR and FACESERVE_IDENTITY_THRESHOLD choose the serving model's."""
    return operating_point(spec, calibration_for(spec, model_file), None, None)
