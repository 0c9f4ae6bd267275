"""A burst far above the concurrency limit: 503 + Retry-After (never another 5xx), then normal service."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from tests.hostile_corpus import good_jpeg
from tests.support import serve

LIMIT = 2


@pytest.fixture(scope="module")
def server(repository):
    with serve({"FACESERVE_MAX_CONCURRENCY": str(LIMIT)}) as url:
        yield url


async def burst(url: str, n: int) -> list[httpx.Response]:
    image = good_jpeg()
    limits = httpx.Limits(max_connections=n, max_keepalive_connections=n)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        async def one(i):
            if i % 10 == 5:
                return await client.get("/readyz")
            return await client.post("/analyze", files={"image": ("a.jpg", image, "image/jpeg")})
        return await asyncio.gather(*(one(i) for i in range(n)))


def test_burst_gets_503_with_retry_after_then_recovers(server):
    responses = asyncio.run(burst(server, 120))
    statuses = [r.status_code for r in responses]
    assert set(statuses) <= {200, 503}, sorted(set(statuses))
    refused = [r for r in responses if r.status_code == 503]
    assert len(refused) >= 20, statuses
    for response in refused:
        assert response.headers["retry-after"] == "1"
        assert response.json()["error"] == "overloaded" and str(LIMIT) in response.json()["message"]
    for response in responses:
        if response.status_code == 200 and response.request.url.path == "/analyze":
            faces = response.json()["faces"]
            assert len(faces) == 1 and faces[0]["emotion"]["label"] == "happy"
    assert all(r.status_code == 200 for r in responses if r.request.url.path == "/readyz")  # health never limited
    # after the burst: normal service, sequentially
    for _ in range(5):
        response = httpx.post(f"{server}/analyze", files={"image": ("a.jpg", good_jpeg(), "image/jpeg")}, timeout=30)
        assert response.status_code == 200 and len(response.json()["faces"]) == 1
