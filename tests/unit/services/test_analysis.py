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


def test_analyze_batch_identifies_each_image_as_identify_does(real, run, fixtures):
    """`analyze_batch` with `identify`: each face of each image with the best match `/identify` gives it, on the
    identity set's probes after enrolling its people; the answers remembered with the identity field."""
    from tests.integration.test_identity_http import IDENTITY, PROBES, enrol_photos, named_left_to_right

    if not (IDENTITY / "enroll").is_dir():
        pytest.skip(f"{IDENTITY} is absent")
    for person, photos in enrol_photos().items():
        identity = run(real.identity.create_identity(ALICE, person))
        run(real.identity.add_faces(ALICE, identity.id, photos, None))
    probes = [IDENTITY / "probe" / name for name in PROBES]
    batch = run(real.analysis.analyze_batch(ALICE, probes, None, identify=True))
    assert len(batch.results) == len(PROBES)
    for probe, analysis in zip(probes, batch.results):
        answer = analysis.model_dump(mode="json")
        named, others = named_left_to_right(answer["faces"], len(PROBES[probe.name]))
        assert (named, others) == (PROBES[probe.name], [None] * len(others)), probe.name
        identified = run(real.identity.identify(upload=probe, top_k=1)).model_dump(mode="json")
        assert [face["identity"] for face in answer["faces"]] == [face["identity"] for face in identified["faces"]]
        assert all(face["emotion"] for face in answer["faces"]) and "embedding" in answer["models"]
    unknown = batch.results[list(PROBES).index("lin-manuel-miranda.png")]
    assert [face.identity for face in unknown.faces] == [None]
    # the identity field of a batch's answer is correctable as `analyze`'s is
    record = run(real.feedback.correct(ALICE, unknown.request_id, 0, "identity", "lin_manuel_miranda"))
    assert (record.model_said, record.correct, record.model) == ("unknown", "lin_manuel_miranda",
                                                                 unknown.models["embedding"])
    plain = run(real.analysis.analyze_batch(ALICE, probes[:2], None))
    assert [face.identity for result in plain.results for face in result.faces] == [None, None]
