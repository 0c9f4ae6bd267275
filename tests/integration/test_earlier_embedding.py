"""A gallery enrolled under FaceRes keeps working once embedding_dlib serves (issue 23), on real photos
(../shared/fixtures/identity): one repository holds both models; a service serving faceres enrols everyone, then a
service serving the default (embedding_dlib) over the same store identifies every probe through faceres, the
earlier model, and names it in the match; after `gallery reembed` the serving model finds them, and faceres no
longer runs."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
from pathlib import Path

import pytest

from faceserve.dev.fixtures import IDENTITY_PROBES
from faceserve.pipeline import imaging
from faceserve.services import Services
from faceserve.services.reembed import reembed
from faceserve.settings import Settings
from tests.support import FIXTURES

IDENTITY = FIXTURES / "identity"
MODELS = ("face_detector", "faceboxes", "blazeface_full", "face_landmarks", "faceres", "embedding_dlib")


@pytest.fixture(scope="module")
def repo(repository, tmp_path_factory) -> Path:
    """The detectors, the landmark model and both embedding models, linked from the built repository."""
    if not all((repository / name / "1" / "model.onnx").is_file() for name in ("faceres", "embedding_dlib")):
        pytest.skip("faceres and embedding_dlib are not both built (make repository)")
    if not IDENTITY.is_dir():
        pytest.skip(f"{IDENTITY} is absent: the identity photos are needed")
    repo = tmp_path_factory.mktemp("earlier") / "repo"
    repo.mkdir()
    for name in MODELS:
        if (repository / name).is_dir():
            (repo / name).symlink_to((repository / name).resolve())
    return repo


def started(repo: Path, store: str, embedding_model: str | None):
    settings = dataclasses.replace(Settings.from_env(), repository=repo, embedding_cache=0, store=store,
                                   embedding_model=embedding_model)
    services = Services.build(settings)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(services.resources.start())
    return services, loop


def identified(loop, stage) -> dict[str, list[tuple[str | None, str | None]]]:
    """Each probe's faces (the first len(expected) by height, then left to right): (name, the match's model)."""
    found = {}
    for probe, expected in IDENTITY_PROBES.items():
        answer = loop.run_until_complete(stage.identify(imaging.decode((IDENTITY / "probe" / probe).read_bytes()),
                                                        None, 1))
        faces = sorted(sorted(answer.faces, key=lambda face: face.box.y1)[:len(expected)], key=lambda f: f.box.x1)
        found[probe] = [(f.identity.name, f.identity.model) if f.identity else (None, None) for f in faces]
    return found


def test_identities_enrolled_under_faceres_are_found_through_it_until_re_embedded(repo, tmp_path):
    store = f"sqlite:///{tmp_path / 'faceserve.db'}"
    before, loop = started(repo, store, "faceres")
    try:
        stage = loop.run_until_complete(before.resources.identity())
        assert stage.model == "faceres:1" and [e.model for e in stage.earlier] == ["embedding_dlib:1"]
        for folder in sorted((IDENTITY / "enroll").iterdir()):
            faces = [loop.run_until_complete(stage.enrolment(imaging.decode(path.read_bytes()),
                                                             hashlib.sha256(path.read_bytes()).hexdigest(), None,
                                                             path.name, thumbnail=True))
                     for path in sorted(folder.iterdir())]
            stage.gallery.create_identity(folder.name, faces=faces)
    finally:
        loop.run_until_complete(before.close())
        loop.close()

    after, loop = started(repo, store, None)
    try:
        stage = loop.run_until_complete(after.resources.identity())
        assert stage.model == "embedding_dlib:1" and [e.model for e in stage.earlier] == ["faceres:1"]
        # every probe as the fixtures README says, through faceres at its own threshold
        assert identified(loop, stage) == {probe: [(name, "faceres:1" if name else None) for name in names]
                                           for probe, names in IDENTITY_PROBES.items()}
        report = loop.run_until_complete(reembed(stage))
        assert (report.faces_seen, report.reembedded, report.not_reembedded) == (9, 9, [])
        # the serving model finds them now, and lin-manuel-miranda is still unknown; faceres has nobody left to find
        assert identified(loop, stage) == {probe: [(name, None) for name in names]
                                           for probe, names in IDENTITY_PROBES.items()}
        assert stage.earlier[0].pending(stage.gallery) == frozenset()
    finally:
        loop.run_until_complete(after.close())
        loop.close()
