"""The identity stage (`faceserve/pipeline/identity.py`) over a temporary SQLite gallery.

Its decisions (which face is enrolled, same person or not, who is found at which threshold, what a non-finite
vector answers) are tested over a scripted pipeline: the faces and vectors each test names, no model run. The
last test runs the real detector and embedding model on real photos, where the models are the point."""

from __future__ import annotations

import dataclasses
import hashlib
import io

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from faceserve.errors import FaceserveError
from faceserve.gallery import EmbeddingModel, Gallery, NewFace
from faceserve.models.calibration import BY_FAR_TARGET, Calibration
from faceserve.models.landmarks import PRESENCE_THRESHOLD
from faceserve.pipeline.identity import IdentityStage
from faceserve.pipeline.pipeline import FoundFace
from faceserve.pipeline.quality import EnrolmentBars
from faceserve.pipeline.schemas import Analysis, Box, Face, Quality
from faceserve.store import open_store
from tests.support import FIXTURES

DIMENSION = 4
SHA256 = "0" * 64
# the scripted faces' quality is given, not measured: a face that passes every default bar
GOOD = Quality(width=200, height=240, size=200, sharpness=800, turn=5, presence=1.0)


def unit(*values: float) -> np.ndarray:
    vector = np.asarray(values, np.float32)
    return vector / np.linalg.norm(vector)


def image(key: int, width: int = 200, height: int = 100) -> np.ndarray:
    """A blank photo the scripted pipeline knows by `key` (its first pixel)."""
    photo = np.zeros((height, width, 3), np.uint8)
    photo[0, 0, 0] = key
    return photo


def face(x1: float, y1: float, x2: float, y2: float, score: float = 0.9, quality: Quality = GOOD) -> FoundFace:
    return FoundFace((x1, y1, x2, y2), score, None, quality)


@dataclasses.dataclass
class ScriptedPipeline:
    """The four pipeline calls the stage makes, answering from `faces` (by image key) and `vectors` (by box);
    `presence` is the landmark model's score at a caller's box."""

    faces: dict[int, list[FoundFace]] = dataclasses.field(default_factory=dict)
    vectors: dict[tuple, np.ndarray] = dataclasses.field(default_factory=dict)
    presence: float = 0.95
    quality: Quality = dataclasses.field(default_factory=lambda: GOOD)  # of a face at a caller's box
    located: list = dataclasses.field(default_factory=list)  # the detector each locate was asked for
    # an earlier embedding model's answers, by box, and the models each embed call ran
    earlier_vectors: dict[tuple, np.ndarray] = dataclasses.field(default_factory=dict)
    embedded_by: list = dataclasses.field(default_factory=list)

    def require_embedding(self):
        return scripted_head("scripted", "3", 0.5)

    @property
    def repository(self):
        """Model files that do not exist: no calibration applies to scripted models."""
        return type("Repository", (), {"model_file": staticmethod(lambda name: Path("/nonexistent") / name)})

    @property
    def earlier_embeddings(self) -> dict:
        return {"earlier": scripted_head("earlier", "1", 0.8)} if self.earlier_vectors else {}

    async def locate(self, photo, detector=None):
        self.located.append(detector)
        return self.faces.get(int(photo[0, 0, 0]), [])

    async def at_boxes(self, photo, boxes):
        return [FoundFace(tuple(map(float, box)), self.presence, None, self.quality) for box in boxes]

    async def embed(self, photo, faces, head=None):
        name = head.spec.name if head is not None else "scripted"
        self.embedded_by.append(name)
        vectors = self.vectors if name == "scripted" else self.earlier_vectors
        return np.stack([vectors[f.box] for f in faces]) if faces else np.zeros((0, DIMENSION), np.float32)

    async def analyze_and_embed_by(self, photo, detector, heads):
        found = await self.locate(photo, detector)
        analysis = Analysis(width=photo.shape[1], height=photo.shape[0], detector="scripted", models={},
                            missing_heads=[], timings_ms={}, faces=[Face(box=Box(x1=f.box[0], y1=f.box[1], x2=f.box[2], y2=f.box[3]), score=f.score)
                                   for f in found])
        return analysis, [await self.embed(photo, found, head) for head in heads]


def scripted_head(name: str, version: str, threshold: float):
    spec = type("Spec", (), {"name": name, "version": version, "score_threshold": threshold})
    return type("Head", (), {"spec": spec, "dimension": DIMENSION})


@pytest.fixture
def gallery(tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    yield Gallery(store, EmbeddingModel("scripted", "3", DIMENSION))
    store.close()


@pytest.fixture
def pipeline() -> ScriptedPipeline:
    return ScriptedPipeline()


@pytest.fixture
def stage(pipeline, gallery) -> IdentityStage:
    return IdentityStage(pipeline, gallery, threshold=0.6)


def refusal(run, coroutine) -> tuple[int, str, str]:
    with pytest.raises(FaceserveError) as refused:
        run(coroutine)
    return refused.value.status, refused.value.code, refused.value.message


def test_the_stage_names_its_model_and_opens_at_the_heads_own_threshold_unless_told(pipeline, gallery, tmp_path):
    store = open_store(f"sqlite:///{tmp_path / 'opened.db'}")
    try:
        measured, told = IdentityStage.open(pipeline, store), IdentityStage.open(pipeline, store, threshold=0.7)
        assert (measured.model, measured.threshold, told.threshold) == ("scripted:3", 0.5, 0.7)
        assert measured.gallery.model == EmbeddingModel("scripted", "3", DIMENSION)
    finally:
        store.close()


def test_enrolment_takes_the_only_face_and_refuses_none_or_several(stage, pipeline, run):
    pipeline.faces = {1: [face(10, 10, 50, 60)], 2: [], 3: [face(0, 0, 20, 20), face(30, 30, 60, 60)]}
    pipeline.vectors = {(10, 10, 50, 60): unit(1, 0, 0, 0)}
    new = run(stage.enrolment(image(1), SHA256, None, "image 1"))
    assert (new.box, new.image_sha256, new.thumbnail, new.vector.tolist()) == (
        (10, 10, 50, 60), SHA256, None, [1, 0, 0, 0])
    assert refusal(run, stage.enrolment(image(2), SHA256, None, "image 2")) == (
        400, "no_face", "image 2: no face found; send a photo of the face, or give its box")
    assert refusal(run, stage.enrolment(image(3), SHA256, None, "image 3")) == (
        400, "several_faces", "image 3: 2 faces found; send a photo of one face, or give the box of the face to enrol")


def test_enrolment_at_a_box_takes_that_face_if_the_landmark_model_sees_one(stage, pipeline, run):
    pipeline.faces = {1: [face(0, 0, 20, 20), face(30, 30, 60, 60)]}
    pipeline.vectors = {(30.0, 30.0, 60.0, 60.0): unit(0, 1, 0, 0)}
    new = run(stage.enrolment(image(1), SHA256, [30, 30, 60, 60], "image 1"))
    assert (new.box, new.vector.tolist()) == ((30, 30, 60, 60), [0, 1, 0, 0])
    assert pipeline.located == []  # a box the caller gives is not searched for
    assert refusal(run, stage.enrolment(image(1), SHA256, [200, 0, 250, 40], "image 1"))[:2] == (
        400, "box_outside_image")
    assert refusal(run, stage.enrolment(image(1), SHA256, [-40, -40, 0, 0], "image 1"))[:2] == (
        400, "box_outside_image")
    pipeline.presence = PRESENCE_THRESHOLD - 0.01
    assert refusal(run, stage.enrolment(image(1), SHA256, [30, 30, 60, 60], "image 4")) == (
        400, "no_face", "image 4: the landmark model sees no face in the given box")


def test_enrolment_refuses_a_face_under_a_bar_naming_each_measure_and_its_bar(stage, pipeline, run):
    small_and_blurred = GOOD.model_copy(update={"width": 24, "height": 30.5, "size": 24, "sharpness": 20.2})
    turned = GOOD.model_copy(update={"turn": 61.3})
    pipeline.faces = {1: [face(10, 10, 50, 60, quality=small_and_blurred)], 2: [face(10, 10, 50, 60, quality=turned)]}
    pipeline.vectors = {(10, 10, 50, 60): unit(1, 0, 0, 0), (10.0, 10.0, 50.0, 60.0): unit(1, 0, 0, 0)}
    advice = "; send a larger, sharper photo of the face looking at the camera"
    assert refusal(run, stage.enrolment(image(1), SHA256, None, "image 1")) == (
        400, "low_quality_face", "image 1: the face is too small (24 px on its smaller side, the bar is 40 px) and "
                                 "too blurred (sharpness 20.2, the bar is 100)" + advice)
    assert refusal(run, stage.enrolment(image(2), SHA256, None, "image 2")) == (
        400, "low_quality_face", "image 2: the face is too turned (61.3 degrees from the camera, the bar is 30 "
                                 "degrees)" + advice)
    pipeline.quality = turned  # a face at the caller's box passes the same bars
    assert refusal(run, stage.enrolment(image(1), SHA256, [10, 10, 50, 60], "image 3"))[:2] == (
        400, "low_quality_face")
    lenient = IdentityStage(pipeline, stage.gallery, 0.6, EnrolmentBars(max_turn_degrees=70))
    assert run(lenient.enrolment(image(2), SHA256, None, "image 2")).vector.tolist() == [1, 0, 0, 0]


def test_the_thumbnail_shows_the_face_with_room_around_it_and_its_frame_finds_the_box_in_it(stage, pipeline, run):
    """Twice the box's longer side around its centre, downscaled to THUMBNAIL_SIDE by one scale across and down,
    clipped by the photo's edges; a white square at the box's top-left corner lands where the frame puts it."""
    photo = image(1, 1000, 800)
    photo[300:310, 400:410] = 255
    small_face = image(2, 300, 200)
    small_face[50:60, 120:130] = 255
    pipeline.faces = {1: [face(400, 300, 600, 540)], 2: [face(120, 50, 180, 110)], 3: [face(-20, 10, 190, 95)]}
    pipeline.vectors = {(400, 300, 600, 540): unit(1, 1, 0, 0), (120, 50, 180, 110): unit(1, 0, 0, 0),
                        (-20, 10, 190, 95): unit(0, 1, 0, 0)}
    for photo_of, key, (size, frame, box) in (
            (photo, 1, ((256, 256), (260, 180, 256 / 480), (74.67, 64.0, 181.33, 192.0))),  # 480 px, downscaled
            (small_face, 2, ((120, 120), (90, 20, 1.0), (30, 30, 90, 90))),  # 120 px: kept as it is
            # past the photo's left edge, and 420 px tall around it: the whole 200x100 photo, the box as it was
            (image(3), 3, ((200, 100), (0, 0, 1.0), (-20, 10, 190, 95)))):
        new = run(stage.enrolment(photo_of, SHA256, None, f"image {key}", thumbnail=True))
        small = Image.open(io.BytesIO(new.thumbnail))
        assert (small.format, small.size) == ("JPEG", size)
        assert (new.thumbnail_frame.x1, new.thumbnail_frame.y1) == frame[:2]
        assert new.thumbnail_frame.scale == pytest.approx(frame[2])
        assert new.thumbnail_frame.inside(new.box) == pytest.approx(box, abs=0.01)
        if key == 3:
            continue
        pixels = np.asarray(small.convert("L"), np.float32)
        x1, y1 = (round(v) for v in box[:2])
        marker = round(10 * frame[2])
        assert pixels[y1:y1 + marker, x1:x1 + marker].mean() > 200
        assert pixels[y1 + marker + 2:, x1 + marker + 2:].max() < 60


def test_no_thumbnail_unless_asked(stage, pipeline, run):
    pipeline.faces = {1: [face(40, 10, 90, 60)]}
    pipeline.vectors = {(40, 10, 90, 60): unit(1, 0, 0, 0)}
    new = run(stage.enrolment(image(1), SHA256, None, "image 1"))
    assert (new.thumbnail, new.thumbnail_frame) == (None, None)


def test_verify_compares_the_largest_face_of_each_image_at_the_threshold(stage, pipeline, run):
    small, large, other = face(0, 0, 10, 10), face(50, 20, 150, 90), face(5, 5, 80, 80)
    pipeline.faces = {1: [small, large], 2: [other], 3: []}
    pipeline.vectors = {small.box: unit(0, 0, 0, 1), large.box: unit(1, 0, 0, 0), other.box: unit(0.8, 0.6, 0, 0)}
    verdict = run(stage.verify(image(1), image(2)))
    assert (verdict.same_person, verdict.similarity, verdict.threshold, verdict.model) == (True, 0.8, 0.6, "scripted:3")
    assert [(b.x1, b.y1, b.x2, b.y2) for b in verdict.faces] == [(50, 20, 150, 90), (5, 5, 80, 80)]
    stage.threshold = 0.81
    assert run(stage.verify(image(1), image(2))).same_person is False
    assert refusal(run, stage.verify(image(1), image(3))) == (400, "no_face", "image 2: no face found")


def test_verify_and_identify_answer_the_operating_point_their_threshold_stands_for(pipeline, gallery, run):
    calibration = Calibration.from_scores([0.62, 0.7, 0.75, 0.8], [i / 1000 for i in range(295)] + [0.6] * 5,
                                          model="scripted", model_sha256="ab" * 32, recipe={}, calibration_set="pairs")
    stage = IdentityStage(pipeline, gallery, calibration.point(0.61, BY_FAR_TARGET, 0.05))
    first, second = face(0, 0, 10, 10), face(5, 5, 80, 80)
    pipeline.faces = {1: [first], 2: [second]}
    pipeline.vectors = {first.box: unit(1, 0, 0, 0), second.box: unit(0.8, 0.6, 0, 0)}
    verdict, found = run(stage.verify(image(1), image(2))), run(stage.identify(image(1), None, top_k=1))
    assert verdict.operating_point == found.operating_point
    assert (verdict.threshold, found.threshold) == (0.61, 0.61)
    assert verdict.operating_point.model_dump() == {
        "threshold": 0.61, "chosen_by": "far_target", "far_target": 0.05, "far": 0.0, "far_upper": 0.009936,
        "frr": 0.0, "false_accepts": 0, "different_pairs": 300, "false_rejects": 0, "same_pairs": 4,
        "calibration_set": "pairs"}
    assert run(stage.analyze(image(1))).identity_operating_point == verdict.operating_point
    stage.threshold = 0.7  # a bare cosine stands for nothing known
    assert run(stage.verify(image(1), image(2))).operating_point.model_dump() == {
        "threshold": 0.7, "chosen_by": "identity_threshold", "far_target": None, "far": None, "far_upper": None,
        "frr": None, "false_accepts": None, "different_pairs": None, "false_rejects": None, "same_pairs": None,
        "calibration_set": None}


def test_verify_refuses_a_non_finite_embedding_rather_than_answer_nan(stage, pipeline, run):
    pipeline.faces = {1: [face(0, 0, 10, 10)], 2: [face(0, 0, 20, 20)]}
    pipeline.vectors = {(0, 0, 10, 10): unit(1, 0, 0, 0), (0, 0, 20, 20): np.array([np.nan, 0, 0, 0], np.float32)}
    assert refusal(run, stage.verify(image(1), image(2))) == (
        400, "no_embedding", "image 2: the embedding model gave no usable vector for its face")


def test_identify_answers_top_k_at_or_above_the_threshold_best_first(stage, pipeline, gallery, run):
    ada = gallery.create_identity("Ada", faces=[NewFace(unit(1, 0, 0, 0), SHA256, (0, 0, 1, 1))])
    bob = gallery.create_identity("Bob", faces=[NewFace(unit(0.8, 0.6, 0, 0), SHA256, (0, 0, 1, 1))])
    gallery.create_identity("Cy", faces=[NewFace(unit(0, 0, 1, 0), SHA256, (0, 0, 1, 1))])
    known, stranger = face(0, 0, 40, 40, 0.98), face(60, 0, 100, 40, 0.7)
    pipeline.faces = {1: [known, stranger]}
    pipeline.vectors = {known.box: unit(1, 0, 0, 0), stranger.box: unit(0, 0, 0, 1)}
    found = run(stage.identify(image(1), "faceboxes", top_k=5))
    assert pipeline.located == ["faceboxes"]
    assert (found.width, found.height, found.threshold, found.model) == (200, 100, 0.6, "scripted:3")
    assert [(f.box.x1, f.score, [(m.id, m.name, m.similarity) for m in f.matches]) for f in found.faces] == [
        (0, 0.98, [(ada.id, "Ada", 1.0), (bob.id, "Bob", 0.8)]), (60, 0.7, [])]
    assert (found.faces[0].identity.name, found.faces[1].identity) == ("Ada", None)
    assert [m.name for m in run(stage.identify(image(1), None, top_k=1)).faces[0].matches] == ["Ada"]
    stage.threshold = 0.8  # the threshold itself is a match
    assert [m.name for m in run(stage.identify(image(1), None, top_k=5)).faces[0].matches] == ["Ada", "Bob"]


def test_matches_skip_zero_and_non_finite_vectors_without_searching_them(stage, gallery, run):
    gallery.create_identity("Ada", faces=[NewFace(unit(1, 0, 0, 0), SHA256, (0, 0, 1, 1))])
    vectors = np.stack([unit(1, 0, 0, 0), np.zeros(DIMENSION, np.float32),
                        np.array([np.inf, 0, 0, 0], np.float32), np.array([np.nan] * DIMENSION, np.float32)])
    answers = run(stage.matches(vectors, top_k=3))
    assert [[m.name for m in found] for found in answers] == [["Ada"], [], [], []]
    assert run(stage.matches(np.zeros((0, DIMENSION), np.float32))) == []


def test_analyze_gives_each_face_its_best_match_or_none(stage, pipeline, gallery, run):
    ada = gallery.create_identity("Ada", faces=[NewFace(unit(1, 0, 0, 0), SHA256, (0, 0, 1, 1))])
    known, stranger = face(0, 0, 40, 40), face(60, 0, 100, 40)
    pipeline.faces = {1: [known, stranger]}
    pipeline.vectors = {known.box: unit(0.9, 0.1, 0, 0), stranger.box: unit(0, 1, 0, 0)}
    analysis = run(stage.analyze(image(1)))
    assert [(f.identity.id, f.identity.name, f.identity.similarity) if f.identity else None
            for f in analysis.faces] == [(ada.id, "Ada", 0.9939), None]


def test_identities_enrolled_under_an_earlier_model_are_found_with_it_until_re_embedded(pipeline, tmp_path, run):
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    try:
        serving, earlier = (Gallery(store, EmbeddingModel(name, version, DIMENSION))
                            for name, version in (("scripted", "3"), ("earlier", "1")))
        ada = serving.create_identity("Ada", faces=[NewFace(unit(1, 0, 0, 0), SHA256, (0, 0, 1, 1))])
        eve = earlier.create_identity("Eve", faces=[NewFace(unit(0, 1, 0, 0), SHA256, (0, 0, 1, 1))])
        known, old, stranger = face(0, 0, 40, 40), face(60, 0, 100, 40), face(120, 0, 160, 40)
        pipeline.faces = {1: [known, old, stranger]}
        # the serving model knows nobody in Eve's photo; the earlier model knows her (its threshold: 0.8)
        pipeline.vectors = {known.box: unit(1, 0, 0, 0), old.box: unit(0.5, 0, 0.86, 0), stranger.box: unit(0, 0, 0, 1)}
        pipeline.earlier_vectors = {known.box: unit(0, 0, 1, 0), old.box: unit(0, 0.9, 0.1, 0),
                                    stranger.box: unit(0.5, 0.5, 0.5, 0.5)}
        stage = IdentityStage.open(pipeline, store, threshold=0.6)
        assert [(e.model, e.operating_point.threshold) for e in stage.earlier] == [("earlier:1", 0.8)]
        found = run(stage.identify(image(1), None, top_k=5))
        assert [[(m.name, m.similarity, m.model) for m in f.matches] for f in found.faces] == [
            [("Ada", 1.0, None)], [("Eve", 0.9939, "earlier:1")], []]
        analysis = run(stage.analyze(image(1)))
        assert [(f.identity.name, f.identity.model) if f.identity else None for f in analysis.faces] == [
            ("Ada", None), ("Eve", "earlier:1"), None]
        # Eve re-embedded: only the serving model searches for her, and the earlier model no longer runs
        stage.gallery.add_reembedded(eve.id, [(eve.faces[0].id, NewFace(unit(0, 0, 1, 0), SHA256, (0, 0, 1, 1)))])
        found = run(stage.identify(image(1), None, top_k=5))
        assert [[(m.name, m.model) for m in f.matches] for f in found.faces] == [[("Ada", None)], [("Eve", None)], []]
        pipeline.embedded_by.clear()
        run(stage.identify(image(1), None, top_k=5))
        assert pipeline.embedded_by == ["scripted"]
        assert ada.id != eve.id
        stage.close()
    finally:
        store.close()


@pytest.fixture(scope="module")
def real_stage(runner, tmp_path_factory):
    if not (FIXTURES / "identity").is_dir():
        pytest.skip(f"{FIXTURES / 'identity'} is absent: the identity photos are needed")
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('identity') / 'store.db'}")
    yield IdentityStage.open(runner.pipeline, store)
    store.close()


def photo(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_the_real_models_tell_people_apart_at_the_heads_threshold(real_stage, runner):
    enrol, probe = FIXTURES / "identity" / "enroll", FIXTURES / "identity" / "probe"
    for name, path in (("obama", enrol / "obama" / "obama.jpg"), ("biden", enrol / "biden" / "biden.jpg")):
        data = path.read_bytes()
        new = runner.run(real_stage.enrolment(photo(path), hashlib.sha256(data).hexdigest(), None, name))
        assert abs(float(np.linalg.norm(new.vector)) - 1) < 1e-3
        real_stage.gallery.create_identity(name, faces=[new])
    same = runner.run(real_stage.verify(photo(probe / "obama1.jpg"), photo(probe / "obama3.jpg")))
    other = runner.run(real_stage.verify(photo(probe / "obama1.jpg"), photo(enrol / "biden" / "biden2.jpg")))
    assert (same.same_person, other.same_person) == (True, False)
    assert same.similarity > other.similarity
    found = runner.run(real_stage.identify(photo(probe / "obama_and_biden.jpg"), None, top_k=2))
    assert {f.identity.name for f in found.faces if f.identity} == {"obama", "biden"}
