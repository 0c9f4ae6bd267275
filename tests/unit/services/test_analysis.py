"""`faceserve/services/analysis.py` and the jobs' `analyze_item` on the real models (embedded onnxruntime): every
answer remembered as its caller's, correctable by them, and a job's image answered as `analyze` answers it."""

from __future__ import annotations

import pytest

from faceserve.http.caller import Caller
from faceserve.jobs import WorkItem
from faceserve.services import Services

ALICE = Caller("10.0.0.1", "alice")


@pytest.fixture
def real(settings, run):
    built = Services.build(settings)
    yield built
    run(built.close())


def test_analyze_remembers_its_answer_for_its_caller(real, run, fixtures):
    photo = fixtures / "images" / "emotion_classification.jpg"
    analysis = run(real.analysis.analyze(ALICE, upload=photo))
    assert analysis.request_id is not None and len(analysis.faces) > 1
    emotion = analysis.faces[0].emotion
    other = next(label for label in emotion.scores if label != emotion.label)
    record = run(real.feedback.correct(ALICE, analysis.request_id, 0, "emotion", other))
    assert (record.model_said, record.correct, record.model) == (emotion.label, other, analysis.models["emotion"])
    unremembered = run(real.analysis.analysis(run(real.images.decode(photo.read_bytes()))))
    assert unremembered.request_id is None and len(unremembered.faces) == len(analysis.faces)
    item = WorkItem("job", 0, "photo.jpg", photo.read_bytes(), None, {"detector": None, "identify": False},
                    ALICE.principal)
    answered = run(real.jobs.analyze_item(item))
    assert [face["box"] for face in answered["faces"]] == [face.box.model_dump() for face in analysis.faces]
    assert answered["request_id"] not in (None, analysis.request_id)
    assert run(real.feedback.summary()).total == 1
