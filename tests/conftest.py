from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the project root: `tests`, `benchmarks`, `convert`

from faceserve.dev import photos  # noqa: E402
from faceserve.dev.postgres_local import LocalPostgres  # noqa: E402
from faceserve.models.repository import model_dirs  # noqa: E402
from tests.support import FIXTURES, ROOT, serve  # noqa: E402

REPOSITORY = ROOT / "model_repository"
# The service the front ends (the web page, the chat bot) are tested against, started once per session: one
# worker, URL fetching on for the tests' own image server (reached as `localhost`), and a small body limit so
# that a too-large photo is cheap to make.
FRONT_END_ENV = {"FACESERVE_WORKERS": "1", "FACESERVE_URL_FETCH": "1", "FACESERVE_URL_ALLOWLIST": "localhost",
                 "FACESERVE_MAX_BODY_BYTES": str(2_000_000)}


@pytest.fixture(scope="session", autouse=True)
def throwaway_data_dir(tmp_path_factory):
    """Every service and runtime a test starts remembers its answers (feedback) in a store of the session's,
    never in the user's data directory; a test that names its own keeps it."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FACESERVE_DATA_DIR", os.environ.get("FACESERVE_DATA_DIR")
                     or str(tmp_path_factory.mktemp("session-data")))
        yield


@pytest.fixture(scope="session")
def repository() -> Path:
    built = {d.name for d in model_dirs(REPOSITORY)}
    if not {"face_detector", "emotion"} <= built:
        pytest.fail("the default model repository is not built: run `python -m convert build` (make test does)")
    return REPOSITORY


@pytest.fixture(scope="session")
def fixtures() -> Path:
    if not (FIXTURES / "models").is_dir():
        pytest.skip(f"{FIXTURES} is absent: the shared fixtures (gender/age models, photos) are needed")
    return FIXTURES


@pytest.fixture(scope="session")
def emotion_grid(fixtures):
    return photos.fixture("emotion_classification.jpg")


@pytest.fixture(scope="session")
def gender_age_built(repository, fixtures) -> bool:
    built = {d.name for d in model_dirs(repository)}
    if not {"gender", "age"} <= built:
        pytest.fail("fixtures are present but gender/age were not built")
    return True


@pytest.fixture(scope="session")
def front_end_service(repository, tmp_path_factory) -> str:
    """The base URL of the one service the front-end tests share (FRONT_END_ENV), its gallery in a fresh
    data directory."""
    with serve({**FRONT_END_ENV, "FACESERVE_DATA_DIR": str(tmp_path_factory.mktemp("front-end-data"))}) as url:
        yield url


@pytest.fixture(scope="session")
def postgres():
    """A real PostgreSQL server for the session (faceserve/dev/postgres_local.py); tests create databases on it."""
    with LocalPostgres() as server:
        yield server


@pytest.fixture(params=["sqlite", "postgres"])
def store_url_each_engine(request, tmp_path):
    """A fresh store on each engine: a SQLite file, then a database of its own on the session's PostgreSQL."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'faceserve.db'}"
        return
    postgres = request.getfixturevalue("postgres")
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield postgres.create_database(name)
    postgres.drop_database(name)
