"""Re-embedding a gallery after its embedding model changed (`faceserve gallery reembed`, issue 23), on real photos
(../shared/fixtures/identity) and both stores.

faceres version 2 is version 1's own model.onnx added and promoted with the versions tooling, so one pipeline (at
version 2) serves the module: the faces "enrolled under version 1" are its enrolments stored under
faceres:1 through a Gallery of that model, exactly what a version 1 service would have stored (same weights), and
are invisible to version 2's search until they are re-embedded."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from faceserve.dev.fixtures import IDENTITY_PROBES
from faceserve.gallery import EmbeddingModel, Gallery, NewFace
from faceserve.gallery.transfer import export
from faceserve.errors import ModelMismatch, StoreUnavailable
from faceserve.gallery import audit
from faceserve.http.caller import Caller
from faceserve.models import versions
from faceserve.models.repository import CONFIG_FILE, read_config, spec_of_config
from faceserve.pipeline import imaging
from faceserve.pipeline.identity import IdentityStage
from faceserve.services import Services
from faceserve.services.reembed import NO_THUMBNAIL, UNDECODABLE_THUMBNAIL, reembed
from faceserve.settings import Settings
from faceserve.store import open_store
from tests.support import FIXTURES, ROOT

IDENTITY = FIXTURES / "identity"
V1 = EmbeddingModel("faceres", "1", 1024)
V2 = EmbeddingModel("faceres", "2", 1024)
OPERATOR = Caller("127.0.0.1", "ops", frozenset())
PROBES = IDENTITY_PROBES


@pytest.fixture(scope="module")
def repo(repository, tmp_path_factory) -> Path:
    """The detectors, the landmark model and faceres, whose version 2 (version 1's model, copied) serves."""
    if not (repository / "faceres" / "1" / "model.onnx").is_file():
        pytest.skip("faceres is not built")
    if not IDENTITY.is_dir():
        pytest.skip(f"{IDENTITY} is absent: the identity photos are needed")
    repo = tmp_path_factory.mktemp("reembed") / "repo"
    for name in ("face_detector", "faceboxes", "face_landmarks", "faceres"):
        if (repository / name).is_dir():
            shutil.copytree(repository / name, repo / name)
    model_dir = repo / "faceres"
    spec = spec_of_config(read_config(model_dir / CONFIG_FILE), model_dir)
    added = versions.add_version(model_dir, spec, (model_dir / "1" / "model.onnx").read_bytes(),
                                 {"source": "faceres version 1, copied (tests/integration/test_reembed.py)"})
    assert versions.promote(model_dir, added) == (1, 2)
    return repo


@pytest.fixture(scope="module")
def services(repo, tmp_path_factory):
    settings = dataclasses.replace(Settings.from_env(), repository=repo, embedding_cache=0,
                                   store=f"sqlite:///{tmp_path_factory.mktemp('unused') / 'store.db'}")
    built = Services.build(settings)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(built.resources.start())
    yield built, loop
    loop.run_until_complete(built.close())
    loop.close()


def enrol_photos() -> dict[str, list[Path]]:
    return {folder.name: sorted(folder.iterdir()) for folder in sorted((IDENTITY / "enroll").iterdir())}


@pytest.fixture(scope="module")
def enrolments(services) -> dict[str, list[NewFace]]:
    """Each person's faces as a service enrols them with `thumbnails`, from the full photos."""
    built, loop = services
    stage = IdentityStage(built.resources.pipeline, None, 0.59)

    async def faces(photos: list[Path]) -> list[NewFace]:
        return [await stage.enrolment(imaging.decode(path.read_bytes()), hashlib.sha256(path.read_bytes()).hexdigest(),
                                      None, path.name, thumbnail=True) for path in photos]

    return {person: loop.run_until_complete(faces(photos)) for person, photos in enrol_photos().items()}


@pytest.fixture
def store(store_url_each_engine):
    opened = open_store(store_url_each_engine)
    yield store_url_each_engine, opened
    opened.close()


@pytest.fixture
def sqlite_store(tmp_path):
    """One engine is enough for a measurement (the cost of a thumbnail is the store's no more than the other's)."""
    url = f"sqlite:///{tmp_path / 'faceserve.db'}"
    opened = open_store(url)
    yield url, opened
    opened.close()


def enrolled_under_v1(store, enrolments, without_thumbnail: tuple[str, ...] = ()) -> dict[str, str]:
    """Every person enrolled under faceres:1 (`without_thumbnail`: those enrolled without); name -> identity id."""
    v1 = Gallery(store, V1)
    return {person: v1.create_identity(person, faces=[
        dataclasses.replace(face, thumbnail=None, thumbnail_frame=None) if person in without_thumbnail else face
        for face in faces]).id
        for person, faces in enrolments.items()}


def stage_v2(services, store) -> IdentityStage:
    built, _ = services
    return IdentityStage.open(built.resources.pipeline, store, 0.59)


def rows(store) -> list[tuple]:
    with store.read() as tx:
        return sorted(tuple(row) for row in tx.all(
            "SELECT identity_id, model_name, model_version, image_sha256, box_x1, box_y1, box_x2, box_y2, "
            "thumbnail IS NOT NULL, thumbnail_x1, thumbnail_y1, thumbnail_scale FROM gallery_faces"))


def named(identification, count: int) -> list:
    by_height = sorted(identification.faces, key=lambda face: face.box.y1)
    return [face.identity and face.identity.name for face in sorted(by_height[:count], key=lambda face: face.box.x1)]


def identified(services, stage: IdentityStage) -> dict[str, list]:
    _, loop = services
    return {probe: named(loop.run_until_complete(stage.identify(imaging.decode((IDENTITY / "probe" / probe)
                                                                                 .read_bytes()), None, 1)),
                         len(expected)) for probe, expected in PROBES.items()}


def test_reembed_adds_each_face_once_under_the_serving_model_and_the_probes_are_identified_again(
        services, enrolments, store):
    _, loop = services
    _, opened = store
    ids = enrolled_under_v1(opened, enrolments)
    stage = stage_v2(services, opened)
    before = rows(opened)
    assert {probe: names for probe, names in identified(services, stage).items()} == {
        probe: [None] * len(names) for probe, names in PROBES.items()}  # version 2 sees none of version 1's faces

    dry = loop.run_until_complete(reembed(stage, dry_run=True))
    assert (dry.faces_seen, dry.reembedded, dry.already_present, dry.not_reembedded) == (9, 9, 0, [])
    assert rows(opened) == before and stage.gallery.audit().entries[-1].operation == "create_identity"

    seen: list[tuple[int, int]] = []
    report = loop.run_until_complete(reembed(stage, caller=OPERATOR, progress=lambda *p: seen.append(p)))
    assert (report.model, report.faces_seen, report.reembedded, report.already_present, report.not_reembedded,
            report.complete) == ("faceres:2", 9, 9, 0, [], True)
    assert seen[-1] == (9, 9) and len(seen) == 5  # once per identity
    # every version 1 row kept, and one version 2 row beside it: same identity, image, box, thumbnail and its frame
    assert all(row[-1] is not None for row in before)
    assert rows(opened) == sorted(before + [(*row[:2], "2", *row[3:]) for row in before])
    entries = [e for e in stage.gallery.audit().entries if e.operation == "reembed"]
    assert sorted((e.identity_ids[0], e.faces, e.key_id) for e in entries) == sorted(
        (ids[person], len(faces), "ops") for person, faces in enrolments.items())

    assert identified(services, stage) == PROBES  # lin-manuel-miranda still unknown
    again = loop.run_until_complete(reembed(stage))
    assert (again.faces_seen, again.reembedded, again.already_present, again.not_reembedded) == (9, 0, 9, [])
    assert len(rows(opened)) == 18
    # a rollback to version 1 finds its gallery whole: each face finds its own person, as before
    v1 = Gallery(opened, V1)
    assert [[(m.identity_id, round(m.similarity, 4)) for m in v1.search(face.vector[None], 1)[0]]
            for faces in enrolments.values() for face in faces] == [
        [(ids[person], 1.0)] for person, faces in enrolments.items() for _ in faces]


def test_faces_without_or_with_a_broken_thumbnail_are_reported_by_id_and_the_rest_re_embedded(
        services, enrolments, store):
    _, loop = services
    _, opened = store
    ids = enrolled_under_v1(opened, enrolments, without_thumbnail=("obama",))
    broken = Gallery(opened, V1).get_identity(ids["biden"]).faces[0].id
    with opened.transaction() as tx:
        tx.execute("UPDATE gallery_faces SET thumbnail = ? WHERE id = ?", (b"\xff\xd8 not a jpeg", broken))
    obama = Gallery(opened, V1).get_identity(ids["obama"]).faces
    report = loop.run_until_complete(reembed(stage_v2(services, opened)))
    assert sorted((f.face_id, f.identity_id, f.model, f.reason) for f in report.not_reembedded) == sorted(
        [(face.id, ids["obama"], "faceres:1", NO_THUMBNAIL) for face in obama]
        + [(broken, ids["biden"], "faceres:1", UNDECODABLE_THUMBNAIL)])
    assert (report.faces_seen, report.reembedded, report.already_present, report.complete) == (9, 6, 0, False)
    assert sorted(r[0] for r in rows(opened) if r[2] == "2") == sorted(
        [ids["alex_lacamoire"]] + [ids["biden"]] + [ids["kit_harington"]] * 2 + [ids["rose_leslie"]] * 2)


def test_a_face_without_a_usable_vector_or_deleted_meanwhile_is_reported(services, enrolments, store, monkeypatch):
    _, loop = services
    _, opened = store
    ids = enrolled_under_v1(opened, enrolments)
    stage = stage_v2(services, opened)
    v1 = Gallery(opened, V1)
    nan_face = v1.get_identity(ids["biden"]).faces[0].id
    gone_face = v1.get_identity(ids["rose_leslie"]).faces[0].id
    read, thumbnail, embed = [], stage.gallery.thumbnail, stage.pipeline.embed

    def thumbnail_then_deleted(face_id: str) -> bytes | None:
        read.append(face_id)
        data = thumbnail(face_id)
        if face_id == gone_face:  # deleted between its embedding and the write
            v1.delete_face(face_id)
        return data

    async def nan_for_one(image, faces):
        vectors = await embed(image, faces)
        return np.full_like(vectors, np.nan) if read[-1] == nan_face else vectors

    monkeypatch.setattr(stage.gallery, "thumbnail", thumbnail_then_deleted)
    monkeypatch.setattr(stage.pipeline, "embed", nan_for_one)
    report = loop.run_until_complete(reembed(stage))
    assert sorted((f.face_id, f.identity_id, f.reason) for f in report.not_reembedded) == sorted(
        [(nan_face, ids["biden"], "invalid_embedding"), (gone_face, ids["rose_leslie"], "deleted")])
    assert (report.faces_seen, report.reembedded, report.complete) == (9, 7, False)
    assert "not re-embedded: 1 deleted, 1 invalid_embedding" in report.summary()
    assert len([r for r in rows(opened) if r[2] == "2"]) == 7


def test_a_failed_write_leaves_that_identity_as_it_was_and_a_rerun_completes(services, enrolments, store, monkeypatch):
    _, loop = services
    _, opened = store
    enrolled_under_v1(opened, enrolments)
    stage = stage_v2(services, opened)
    before = rows(opened)
    calls = []
    original = audit.record

    def fail_on_the_second(tx, caller, operation, identity_ids, face_ids):
        calls.append(identity_ids[0])
        original(tx, caller, operation, identity_ids, face_ids)
        if len(calls) == 2:  # the faces inserted and audited, then the store lost before the commit
            raise StoreUnavailable("the store went away")

    monkeypatch.setattr(audit, "record", fail_on_the_second)
    with pytest.raises(StoreUnavailable):
        loop.run_until_complete(reembed(stage))
    monkeypatch.undo()
    after = rows(opened)
    first = calls[0]
    assert sorted(set(after) - set(before)) == sorted((first, "faceres", "2", *r[3:]) for r in before if r[0] == first)
    report = loop.run_until_complete(reembed(stage))
    assert (report.reembedded, report.already_present, report.not_reembedded) == (
        9 - sum(1 for r in before if r[0] == first), sum(1 for r in before if r[0] == first), [])
    assert len(rows(opened)) == 18


def probe_matches(services, gallery: Gallery) -> dict[str, list]:
    """Per probe face named in PROBES (left to right): (expected name, similarity of the best face of the expected
    identity or None, best similarity of anyone else)."""
    built, loop = services
    pipeline = built.resources.pipeline
    found = {}
    for probe, expected in PROBES.items():
        image = imaging.decode((IDENTITY / "probe" / probe).read_bytes())
        faces = loop.run_until_complete(pipeline.locate(image))
        faces = sorted(sorted(faces, key=lambda face: face.box[1])[:len(expected)], key=lambda face: face.box[0])
        for name, matches in zip(expected, gallery.search(loop.run_until_complete(pipeline.embed(image, faces)), 6)):
            own = [m.similarity for m in matches if m.name == name]
            found.setdefault(probe, []).append(
                (name, own[0] if own else None, max((m.similarity for m in matches if m.name != name), default=-1)))
    return found


def bare_box_thumbnails(enrolments: dict[str, list[NewFace]]) -> dict[str, list[NewFace]]:
    """The enrolments with thumbnails as they were stored before frames (gallery schema 2): the box alone, clipped to
    the photo, downscaled to 112 px, a JPEG; no frame. Old rows of a gallery hold these."""
    def cut(path: Path, face: NewFace) -> NewFace:
        photo = imaging.decode(path.read_bytes())
        x1, y1 = max(0, int(face.box[0])), max(0, int(face.box[1]))
        x2, y2 = min(photo.shape[1], round(face.box[2])), min(photo.shape[0], round(face.box[3]))
        box = photo[y1:y2, x1:x2]
        scale = min(1.0, 112 / max(box.shape[:2]))
        small = cv2.resize(box, (round(box.shape[1] * scale), round(box.shape[0] * scale)),
                           interpolation=cv2.INTER_AREA)
        return dataclasses.replace(face, thumbnail=imaging.encode(small, "jpeg", quality=85), thumbnail_frame=None)

    photos = enrol_photos()
    return {person: [cut(path, face) for path, face in zip(photos[person], faces)]
            for person, faces in enrolments.items()}


def reembedded_cosines(services, opened, enrolments) -> tuple[list[float], IdentityStage]:
    """Each face enrolled under faceres:1 and re-embedded under faceres:2 from its thumbnail: the cosine of the two
    embeddings (the same weights, so 1.0 but for what the thumbnail loses), least first."""
    _, loop = services
    enrolled_under_v1(opened, enrolments)
    stage = stage_v2(services, opened)
    report = loop.run_until_complete(reembed(stage))
    assert (report.reembedded, report.not_reembedded) == (9, [])
    with opened.read() as tx:
        pairs = tx.all("SELECT a.vector, b.vector FROM gallery_faces a JOIN gallery_faces b ON "
                       "a.identity_id = b.identity_id AND a.image_sha256 = b.image_sha256 AND a.box_x1 = b.box_x1 "
                       "WHERE a.model_version = '1' AND b.model_version = '2'")
    unit = lambda data: np.frombuffer(data, "<f4") / np.linalg.norm(np.frombuffer(data, "<f4"))  # noqa: E731
    return sorted(float(unit(a) @ unit(b)) for a, b in pairs), stage


def test_what_a_thumbnail_re_embedding_costs(services, enrolments, sqlite_store, tmp_path):
    """The figures of docs/identity.md ("Changing the embedding model"): each face's embedding from its thumbnail
    against the one from its photo, and the probes' similarities to a gallery of either, for thumbnails as they are
    made now (room around the face, and a frame) and as they were before (the box alone): both re-embed, each by its
    own rule."""
    _, opened = sqlite_store
    framed, stage = reembedded_cosines(services, opened, enrolments)
    with open_store(f"sqlite:///{tmp_path / 'bare-box.db'}") as old_store:
        bare_box, old_stage = reembedded_cosines(services, old_store, bare_box_thumbnails(enrolments))
        assert identified(services, old_stage) == PROBES  # lin-manuel-miranda still unknown
        before = probe_matches(services, old_stage.gallery)
    photo, after = probe_matches(services, Gallery(opened, V1)), probe_matches(services, stage.gallery)
    print("\ncosine photo vs thumbnail, the box alone (before):", [round(c, 3) for c in bare_box], summary(bare_box))
    print("cosine photo vs thumbnail, with room and frame (now):", [round(c, 3) for c in framed], summary(framed))
    for probe in PROBES:
        print(probe, "photo:", photo[probe], "before:", before[probe], "now:", after[probe])
    assert len(bare_box) == 9 and bare_box[0] > 0.7 and np.mean(bare_box) > 0.8  # measured: 0.738, mean 0.830
    assert len(framed) == 9 and framed[0] > 0.975 and np.mean(framed) > 0.985  # measured: 0.983, mean 0.989
    assert identified(services, stage) == PROBES  # lin-manuel-miranda still unknown
    # every probe face's similarity to its own person near the photo's gallery (measured: within 0.018; before: -0.087)
    assert all(abs(own_now - own_photo) < 0.03 for probe in PROBES if PROBES[probe] != [None]
               for (_, own_photo, _), (_, own_now, _) in zip(photo[probe], after[probe]))


def summary(cosines: list[float]) -> str:
    return f"mean {np.mean(cosines):.3f}, least {min(cosines):.3f}"


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "faceserve", "gallery", "reembed", *args], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def test_the_command_reports_as_json_and_its_exit_code_says_whether_everything_was_re_embedded(
        repo, enrolments, tmp_path):
    complete, partial = f"sqlite:///{tmp_path / 'complete.db'}", f"sqlite:///{tmp_path / 'partial.db'}"
    for url, without in ((complete, ()), (partial, ("rose_leslie",))):
        with open_store(url) as opened:
            ids = enrolled_under_v1(opened, enrolments, without_thumbnail=without)
    with open_store(complete) as opened:
        before = rows(opened)

    dry = cli("--store", complete, "--repository", str(repo), "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert {k: v for k, v in json.loads(dry.stdout).items()} == {
        "model": "faceres:2", "dry_run": True, "faces_seen": 9, "reembedded": 9, "already_present": 0,
        "not_reembedded": []}
    assert "9 faces under other models than faceres:2: 9 would be re-embedded" in dry.stderr
    with open_store(complete) as opened:
        assert rows(opened) == before
    done = cli("--store", complete, "--repository", str(repo))
    assert done.returncode == 0 and json.loads(done.stdout)["reembedded"] == 9, done.stderr

    missed = cli("--store", partial, "--repository", str(repo))
    assert missed.returncode == 1, missed.stderr
    with open_store(partial) as opened:
        rose = [face.id for face in Gallery(opened, V1).get_identity(ids["rose_leslie"]).faces]
    answer = json.loads(missed.stdout)
    assert (answer["reembedded"], sorted(answer["not_reembedded"], key=lambda f: f["face_id"])) == (7, [
        {"face_id": face_id, "identity_id": ids["rose_leslie"], "model": "faceres:1", "reason": "no_thumbnail"}
        for face_id in sorted(rose)])
    assert "not re-embedded: 2 no_thumbnail" in missed.stderr


def test_without_an_embedding_model_the_command_is_refused_and_changes_nothing(repo, enrolments, tmp_path):
    without = tmp_path / "repo"
    shutil.copytree(repo / "face_detector", without / "face_detector")
    url = f"sqlite:///{tmp_path / 'store.db'}"
    with open_store(url) as opened:
        enrolled_under_v1(opened, enrolments)
        before = rows(opened)
    refused = cli("--store", url, "--repository", str(without))
    assert refused.returncode == 2 and refused.stdout == ""
    assert json.loads(refused.stderr.strip().splitlines()[-1])["error"] == "no_embedding_model"
    with open_store(url) as opened:
        assert rows(opened) == before
