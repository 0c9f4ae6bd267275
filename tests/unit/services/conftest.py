"""The services over the real repository's specs and a temporary SQLite store, each test on its own event loop
(`run`, tests/unit/conftest.py).

`FakeBackend` stands in where the models are not the point: it loads nothing and fails any model call, so a test
that uses it also shows that its request ran no model."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from faceserve.backends import Backend
from faceserve.services import Services
from faceserve.settings import Settings


class FakeBackend(Backend):
    kind = "fake"

    def __init__(self):
        self.started = 0

    async def start(self, specs) -> None:
        self.started += 1

    async def _infer(self, spec, batch):
        raise AssertionError(f"a model ran ({spec.name}) where none should")

    async def ready(self) -> dict[str, bool]:
        return {"fake": True}


@pytest.fixture
def settings(repository, tmp_path) -> Settings:
    return dataclasses.replace(Settings.from_env(), repository=repository, store=f"sqlite:///{tmp_path / 'store.db'}",
                               url_fetch=False, decline_labels=())


@pytest.fixture
def services(settings, run) -> Services:
    """Every service over the fake backend."""
    built = Services.build(settings, backend=FakeBackend())
    yield built
    run(built.close())


def png(width: int = 3, height: int = 2) -> bytes:
    out = io.BytesIO()
    Image.fromarray(np.arange(width * height * 3, dtype=np.uint8).reshape(height, width, 3)).save(out, "PNG")
    return out.getvalue()
