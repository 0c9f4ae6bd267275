"""The comparison report of a model's trials (`/models/compare`, `python -m faceserve models compare`): per pair of
versions compared (serving, candidate, mode), their agreement face by face, the confusion between their labels (for
a field without labels, the distribution of their difference), each version's call time, and the `/feedback`
corrections of the faces they were compared on; beside it, the corrections each version of the model received."""

from __future__ import annotations

import math
import statistics

from pydantic import BaseModel, Field

from faceserve.models.versions import model_ref
from faceserve.store import Store

# the report reads at most this many of the latest compared faces per model (the table keeps every one)
REPORT_ROWS = 200_000
DIFFERENCE_BUCKETS = (0.5, 1, 2, 5, 10)  # a number field's |difference| counted up to each bound, in its units


class LabelPair(BaseModel):
    serving: str
    candidate: str
    count: int


class Latency(BaseModel):
    requests: int
    mean_ms: float
    p50_ms: float
    p95_ms: float


class Difference(BaseModel):
    """A number field's candidate minus serving answer, over the compared faces."""

    mean: float
    mean_abs: float
    p50_abs: float
    p90_abs: float
    max_abs: float
    within: dict[str, int] = Field(description="faces whose |difference| is at most each bound")


class Corrected(BaseModel):
    """The compared faces a `/feedback` correction was sent for: how many each version had right (a label field),
    or each version's mean absolute error against the correction (a number field)."""

    faces: int
    serving_right: int | None = None
    candidate_right: int | None = None
    serving_mean_abs_error: float | None = None
    candidate_mean_abs_error: float | None = None


class PairReport(BaseModel):
    serving: str = Field(description="the version serving during the trial, as name:version")
    candidate: str
    mode: str
    requests: int
    faces: int
    answered_by_candidate: int = Field(description="faces the candidate answered (a canary's share)")
    agreement: float | None = Field(description="share of faces both versions gave the same label (None: a "
                                                "number field: see `difference`)")
    confusion: list[LabelPair] = Field(description="(serving label, candidate label) pairs, most frequent first")
    difference: Difference | None
    latency: dict[str, Latency] = Field(description="each version's call per request, by name:version")
    corrected: Corrected


class VersionFeedback(BaseModel):
    model: str
    corrections: int


class ComparisonReport(BaseModel):
    model: str
    field: str
    trial: dict | None = Field(description="the trial running now in this worker: mode, candidate, share")
    pairs: list[PairReport]
    feedback: list[VersionFeedback] = Field(description="the /feedback corrections each version answered for")


def report(store: Store, model: str, field: str, labelled: bool, trial: dict | None) -> ComparisonReport:
    with store.read() as tx:
        rows = tx.all("SELECT serving_version, candidate_version, mode, request_id, face_index, answered_by, "
                      "serving_said, candidate_said, serving_ms, candidate_ms FROM feedback_comparisons "
                      "WHERE model = ? AND field = ? ORDER BY request_id DESC LIMIT ?", (model, field, REPORT_ROWS))
        corrections = tx.all(
            "SELECT c.request_id, c.face_index, c.correct FROM feedback_corrections c WHERE c.model_name = ? "
            "AND c.field = ? AND EXISTS (SELECT 1 FROM feedback_comparisons x WHERE x.request_id = c.request_id "
            "AND x.field = c.field AND x.face_index = c.face_index)", (model, field))
        per_version = tx.all("SELECT model_version, COUNT(*) FROM feedback_corrections WHERE model_name = ? "
                             "GROUP BY model_version ORDER BY model_version", (model,))
    corrected = {(request_id, face_index): correct for request_id, face_index, correct in corrections}
    pairs: dict[tuple[str, str, str], list[tuple]] = {}
    for row in rows:
        pairs.setdefault(tuple(row[:3]), []).append(row[3:])
    return ComparisonReport(
        model=model, field=field, trial=trial,
        pairs=[_pair(model, key, faces, labelled, corrected)
               for key, faces in sorted(pairs.items(), key=lambda item: -len(item[1]))],
        feedback=[VersionFeedback(model=model_ref(model, version), corrections=count)
                  for version, count in per_version])


def _pair(model: str, key: tuple[str, str, str], faces: list[tuple], labelled: bool,
          corrected: dict[tuple[str, int], str]) -> PairReport:
    serving_version, candidate_version, mode = key
    serving, candidate = model_ref(model, serving_version), model_ref(model, candidate_version)
    said = [(row[3], row[4]) for row in faces]
    per_request = {row[0]: (row[5], row[6]) for row in faces}
    counts: dict[tuple[str, str], int] = {}
    for pair in said:
        counts[pair] = counts.get(pair, 0) + 1
    judged = [(s, c, corrected[(r, i)]) for r, i, _, s, c, *_ in faces if (r, i) in corrected]
    return PairReport(
        serving=serving, candidate=candidate, mode=mode, requests=len(per_request), faces=len(faces),
        answered_by_candidate=sum(1 for row in faces if row[2] == candidate_version),
        agreement=sum(s == c for s, c in said) / len(said) if labelled else None,
        confusion=[LabelPair(serving=s, candidate=c, count=n)
                   for (s, c), n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))] if labelled else [],
        difference=None if labelled else _difference([float(c) - float(s) for s, c in said]),
        latency={serving: _latency([s for s, _ in per_request.values()]),
                 candidate: _latency([c for _, c in per_request.values()])},
        corrected=_corrected(judged, labelled))


def _corrected(judged: list[tuple[str, str, str]], labelled: bool) -> Corrected:
    """(serving said, candidate said, correct) per corrected face."""
    if labelled:
        return Corrected(faces=len(judged), serving_right=sum(s == right for s, _, right in judged),
                         candidate_right=sum(c == right for _, c, right in judged))
    if not judged:
        return Corrected(faces=0)
    def error(said: int) -> float:
        return round(statistics.fmean(abs(float(each[said]) - float(each[2])) for each in judged), 3)
    return Corrected(faces=len(judged), serving_mean_abs_error=error(0), candidate_mean_abs_error=error(1))


def _latency(ms: list[float]) -> Latency:
    ms = sorted(ms)
    return Latency(requests=len(ms), mean_ms=round(statistics.fmean(ms), 3), p50_ms=round(_quantile(ms, 0.5), 3),
                   p95_ms=round(_quantile(ms, 0.95), 3))


def _difference(differences: list[float]) -> Difference:
    absolute = sorted(abs(d) for d in differences)
    return Difference(mean=round(statistics.fmean(differences), 3), mean_abs=round(statistics.fmean(absolute), 3),
                      p50_abs=round(_quantile(absolute, 0.5), 3), p90_abs=round(_quantile(absolute, 0.9), 3),
                      max_abs=round(absolute[-1], 3),
                      within={str(bound): sum(1 for d in absolute if d <= bound) for bound in DIFFERENCE_BUCKETS})


def _quantile(ordered: list[float], q: float) -> float:
    """The nearest-rank quantile of an ordered list."""
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]
