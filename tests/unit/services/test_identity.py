"""`faceserve/services/identity.py` over a temporary SQLite gallery; no model runs (the fake backend fails any)."""

from __future__ import annotations

import base64
import dataclasses
import json

import pytest

from faceserve.errors import FaceserveError
from faceserve.http.caller import Caller
from faceserve.services import Services
from tests.unit.services.conftest import FakeBackend, png

OPS, WEB = Caller("10.0.0.7", "ops"), Caller("192.0.2.1")


def test_identities_created_listed_read_and_deleted_each_change_audited(services, run):
    identity = services.identity
    ada = run(identity.create_identity(OPS, "Ada", {"team": "x"}))
    assert (ada.name, ada.metadata, ada.face_count, ada.faces) == ("Ada", {"team": "x"}, 0, [])
    bob = run(identity.create_identity(WEB, "Bob"))
    assert run(identity.get_identity(ada.id)) == ada
    page = run(identity.list_identities(limit=1))
    assert ([(i.name, i.metadata_keys) for i in page.identities], page.next_after, page.total) == (
        [("Ada", ("team",))], ada.id, 2)
    assert [i.name for i in run(identity.list_identities(after=page.next_after)).identities] == ["Bob"]
    deleted = run(identity.delete_identity(OPS, bob.id))
    assert (deleted.id, deleted.faces_deleted) == (bob.id, 0)
    with pytest.raises(FaceserveError) as missing:
        run(identity.get_identity(bob.id))
    assert missing.value.status == 404
    audit = run(identity.audit())
    assert [(e.operation, e.key_id, e.address, e.identity_ids, e.identities, e.faces) for e in audit.entries] == [
        ("create_identity", "ops", "10.0.0.7", (ada.id,), 1, 0),
        ("create_identity", None, "192.0.2.1", (bob.id,), 1, 0),
        ("delete_identity", "ops", "10.0.0.7", (bob.id,), 1, 0)]
    assert audit.next_after is None


def test_refusals_come_before_any_model_runs_and_change_nothing(services, run):
    identity = services.identity
    ada = run(identity.create_identity(OPS, "Ada"))
    photo = base64.b64encode(png()).decode()
    for attempt, status, code in (
            (lambda: identity.add_faces(WEB, ada.id, None, [photo], boxes=[None, None]), 400, "boxes_mismatch"),
            (lambda: identity.add_faces(WEB, "0190aaaa-0000-7000-8000-000000000000", None, [photo]), 404,
             "not_found"),
            (lambda: identity.add_faces(WEB, ada.id, None, None), 422, "batch_size"),
            (lambda: identity.import_gallery(WEB, None), 400, "no_file"),
            (lambda: identity.face_thumbnail("0190aaaa-0000-7000-8000-000000000000"), 404, "not_found"),
            (lambda: identity.identify(b64=photo, top_k=0), 422, "top_k_out_of_range")):
        with pytest.raises(FaceserveError) as refused:
            run(attempt())
        assert (refused.value.status, refused.value.code) == (status, code)
    assert len(run(identity.audit()).entries) == 1 and run(identity.get_identity(ada.id)).face_count == 0


def test_the_export_imports_into_another_gallery_as_it_was(services, run, settings, tmp_path):
    identity = services.identity
    run(identity.create_identity(OPS, "Ada", {"team": "x"}))
    exported = run(identity.export_gallery())
    header, *lines = [json.loads(line) for line in exported.splitlines()]
    assert (header["model"]["name"], [(line["name"], line["faces"]) for line in lines]) == (
        services.resources.pipeline.embedding.spec.name, [("Ada", [])])
    other = Services.build(dataclasses.replace(settings, store=f"sqlite:///{tmp_path / 'other.db'}"),
                           backend=FakeBackend())
    try:
        upload = tmp_path / "gallery.jsonl"
        upload.write_bytes(exported)
        counts = run(other.identity.import_gallery(WEB, upload))
        assert counts.model_dump() == {"identities": 1, "faces": 0, "identities_present": 0, "faces_present": 0}
        assert run(other.identity.export_gallery()).splitlines()[1:] == exported.splitlines()[1:]
    finally:
        run(other.close())

