"""Fixtures shared by the container tests (test_image.py, test_kube_play.py)."""

from __future__ import annotations

import pytest

from tests import containers


@pytest.fixture(scope="session")
def built_image() -> tuple[str, float | None]:
    """`make image`'s image, built once per session (or FACESERVE_TEST_IMAGE), and its build's seconds."""
    reason = containers.unavailable()
    if reason:
        pytest.skip(reason)
    with containers.built_image() as built:
        yield built
