"""Fixtures every unit test folder may use."""

from __future__ import annotations

import asyncio

import pytest


@pytest.fixture
def run():
    """Runs a coroutine to its end on the test's own event loop."""
    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    loop.close()
