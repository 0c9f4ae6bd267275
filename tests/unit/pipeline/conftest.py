"""The in-process pipeline on the real repository, shared by this folder's tests."""

from __future__ import annotations

import asyncio

import pytest

from faceserve.backends import create
from faceserve.models.repository import Repository
from faceserve.pipeline.pipeline import Pipeline


class Runner:
    """One event loop for a pipeline (its batchers live on that loop)."""

    def __init__(self, repository_path, batch_delay_us: int | None = None):
        self.loop = asyncio.new_event_loop()
        repo = Repository.load(repository_path)
        self.pipeline = Pipeline(repo, create("onnxruntime", repo.path, batch_delay_us=batch_delay_us))
        self.run(self.pipeline.start())

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def analyze(self, image, detector=None):
        return self.run(self.pipeline.analyze(image, detector))

    def close(self):
        self.run(self.pipeline.backend.close())
        self.loop.close()


@pytest.fixture(scope="module")
def runner(repository):
    r = Runner(repository)
    yield r
    r.close()
