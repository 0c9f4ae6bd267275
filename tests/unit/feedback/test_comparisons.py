"""The comparison report over a real store, on SQLite and PostgreSQL: trial rows written with their request's answer
by the background writer, agreement and confusion of a label field, the difference of a number field, latency per
version, and the corrections each version received (a canary's face corrected as the candidate's)."""

from __future__ import annotations

import pytest

from faceserve.feedback import Answer, Compared, Feedback, FieldModel
from faceserve.feedback.comparisons import report
from faceserve.store import open_store

OWNER = "client:192.0.2.1"
LABELS = ("angry", "happy", "sad")


@pytest.fixture
def feedback(store_url_each_engine):
    with open_store(store_url_each_engine) as store:
        feedback = Feedback(store)
        yield feedback
        feedback.close()


def shadowed(feedback: Feedback, serving: list[str], candidate: list[str], ms: tuple[float, float], *,
             canary: bool = False, field: str = "emotion") -> str:
    """A request whose `field` ran version 1 and its candidate 2 (`canary`: 2 answered)."""
    answered = candidate if canary else serving
    labels = LABELS if field == "emotion" else None
    compared = Compared(field, field, "canary" if canary else "shadow", "1", "2", canary, serving, candidate, *ms)
    return feedback.remember(OWNER, Answer("ab" * 32, {field: FieldModel(f"{field}:{2 if canary else 1}", labels)},
                                           [{field: said} for said in answered], compared=(compared,)))


def test_agreement_confusion_latency_and_each_versions_corrections(feedback):
    first = shadowed(feedback, ["happy", "sad"], ["happy", "angry"], (4.0, 6.0))
    shadowed(feedback, ["sad"], ["sad"], (2.0, 10.0))
    canary = shadowed(feedback, ["sad", "happy"], ["angry", "happy"], (3.0, 5.0), canary=True)
    feedback.flush()
    feedback.correct(OWNER, first, 1, "emotion", "angry")  # the serving version said sad, the candidate angry
    stored = feedback.correct(OWNER, canary, 0, "emotion", "sad")  # the candidate answered angry
    assert (stored.model_version, stored.model_said) == ("2", "angry")
    result = report(feedback.store, "emotion", "emotion", True, {"mode": "canary"})
    shadow, canaried = result.pairs
    assert (shadow.mode, shadow.serving, shadow.candidate, shadow.requests, shadow.faces) == (
        "shadow", "emotion:1", "emotion:2", 2, 3)
    assert shadow.agreement == pytest.approx(2 / 3) and shadow.answered_by_candidate == 0
    assert [(p.serving, p.candidate, p.count) for p in shadow.confusion] == [
        ("happy", "happy", 1), ("sad", "angry", 1), ("sad", "sad", 1)]
    assert shadow.latency["emotion:1"].model_dump() == {"requests": 2, "mean_ms": 3.0, "p50_ms": 2.0, "p95_ms": 4.0}
    assert shadow.latency["emotion:2"].mean_ms == 8.0
    assert (shadow.corrected.faces, shadow.corrected.serving_right, shadow.corrected.candidate_right) == (1, 0, 1)
    assert (canaried.mode, canaried.faces, canaried.answered_by_candidate, canaried.agreement) == ("canary", 2, 2, 0.5)
    assert (canaried.corrected.faces, canaried.corrected.serving_right, canaried.corrected.candidate_right) == (1, 1, 0)
    assert [(v.model, v.corrections) for v in result.feedback] == [("emotion:1", 1), ("emotion:2", 1)]
    assert result.trial == {"mode": "canary"}


def test_a_number_field_reports_the_distribution_of_the_difference(feedback):
    request = shadowed(feedback, ["30.0", "8.0", "50.0"], ["31.5", "8.0", "40.0"], (1.0, 1.0), field="age")
    feedback.flush()
    feedback.correct(OWNER, request, 2, "age", "41")
    (pair,) = report(feedback.store, "age", "age", False, None).pairs
    assert pair.agreement is None and pair.confusion == []
    assert pair.difference.model_dump() == {"mean": pytest.approx(-2.833, abs=1e-3), "mean_abs": pytest.approx(3.833),
                                            "p50_abs": 1.5, "p90_abs": 10.0, "max_abs": 10.0,
                                            "within": {"0.5": 1, "1": 1, "2": 2, "5": 2, "10": 3}}
    assert (pair.corrected.faces, pair.corrected.serving_mean_abs_error, pair.corrected.candidate_mean_abs_error) == (
        1, 9.0, 1.0)


def test_a_model_never_on_trial_has_an_empty_report(feedback):
    assert report(feedback.store, "emotion", "emotion", True, None).model_dump() == {
        "model": "emotion", "field": "emotion", "trial": None, "pairs": [], "feedback": []}
