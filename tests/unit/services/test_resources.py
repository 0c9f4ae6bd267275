"""`faceserve/services/resources.py`: each store-backed resource opened once, by its first user, over one store."""

from __future__ import annotations

import asyncio

import pytest

from faceserve.errors import StoreUnavailable
from faceserve.services.resources import OpenedOnce


def test_one_store_under_the_gallery_feedback_and_the_queue(services, run):
    resources = services.resources
    stage, feedback, queue = run(resources.identity()), run(resources.feedback()), run(resources.jobs())
    assert stage.gallery.store is feedback.store is queue.store is resources.store()
    assert run(resources.identity()) is stage and run(resources.jobs()) is queue
    assert resources.pipeline.backend.started == 1  # the identity stage started the backend, once
    assert run(resources.ready()) is True


def test_opened_once_however_many_ask_and_again_after_a_failure(run):
    opened = []

    def open_():
        opened.append(len(opened))
        if len(opened) == 1:
            raise StoreUnavailable("the store cannot be reached")
        return object()

    once = OpenedOnce(open_)
    with pytest.raises(StoreUnavailable):
        run(once.get())

    async def many():
        return await asyncio.gather(*(once.get() for _ in range(8)))

    values = run(many())
    assert len(opened) == 2 and all(value is values[0] for value in values)
