"""The embedded dynamic batcher and the keep-alive limit, without models or a server."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from starlette.responses import PlainTextResponse

from faceserve.backends.batching import DynamicBatcher
from faceserve.http import KeepAliveLimitMiddleware


def batcher_run(sizes: list[int], rows: list[int], **options) -> tuple[list[int], list[np.ndarray]]:
    """Submit one request per entry of `rows` at once; return the executed batch sizes and the answers."""
    def run(batch: np.ndarray) -> dict[str, np.ndarray]:
        sizes.append(len(batch))
        return {"double": batch * 2}

    async def main():
        with ThreadPoolExecutor(1) as executor:
            batcher = DynamicBatcher(run, executor, **options)
            requests = [np.full((n, 1), i, dtype=np.float32) for i, n in enumerate(rows)]
            answers = await asyncio.gather(*(batcher.submit(r) for r in requests))
            await batcher.close()
            return answers
    return sizes, asyncio.run(main())


def test_batches_stop_at_the_largest_preferred_size():
    sizes, answers = batcher_run([], [1] * 20, max_batch_size=64, max_queue_delay_s=0.05,
                                 preferred_batch_sizes=(4, 8))
    assert sizes == [8, 8, 4]
    assert [a["double"][0, 0] for a in answers] == [2 * i for i in range(20)]


def test_without_preferred_sizes_batches_fill_to_max_batch_size():
    sizes, _ = batcher_run([], [1] * 20, max_batch_size=16, max_queue_delay_s=0.05)
    assert sizes == [16, 4]


def test_requests_are_never_split_and_each_caller_gets_its_own_rows():
    sizes, answers = batcher_run([], [3, 3, 3, 3], max_batch_size=8, max_queue_delay_s=0.0,
                                 preferred_batch_sizes=(8,))
    assert sizes == [6, 6]  # a third request of 3 rows would pass max_batch_size: it waits for the next batch
    assert [a["double"].ravel().tolist() for a in answers] == [[2.0 * i] * 3 for i in range(4)]


def test_a_failing_batch_fails_its_callers_and_the_batcher_lives_on():
    calls = []

    def run(batch):
        calls.append(len(batch))
        if len(calls) == 1:
            raise RuntimeError("model failed")
        return {"double": batch * 2}

    async def main():
        with ThreadPoolExecutor(1) as executor:
            batcher = DynamicBatcher(run, executor, max_batch_size=4, max_queue_delay_s=0.0)
            with pytest.raises(RuntimeError, match="model failed"):
                await batcher.submit(np.ones((2, 1), np.float32))
            answer = await batcher.submit(np.ones((1, 1), np.float32))
            await batcher.close()
            return answer
    assert asyncio.run(main())["double"].tolist() == [[2.0]]
    assert calls == [2, 1]


async def _ok(scope, receive, send):
    await PlainTextResponse("ok")(scope, receive, send)


def test_keepalive_limit_closes_every_nth_response_of_a_connection():
    app = KeepAliveLimitMiddleware(_ok, max_requests=3)

    async def main():
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [(await client.get("/")).headers.get("connection") for _ in range(7)]
    assert asyncio.run(main()) == [None, None, "close", None, None, "close", None]


def test_keepalive_limit_counts_each_connection_separately():
    app = KeepAliveLimitMiddleware(_ok, max_requests=2)

    async def main():
        seen = []
        for port in (1, 2, 1, 2):
            transport = httpx.ASGITransport(app=app, client=("10.0.0.1", port))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                seen.append((await client.get("/")).headers.get("connection"))
        return seen
    assert asyncio.run(main()) == [None, None, "close", "close"]
