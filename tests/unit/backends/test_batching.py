"""The embedded dynamic batcher, without models: batch sizes, order, errors."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from faceserve.backends.batching import DynamicBatcher


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
