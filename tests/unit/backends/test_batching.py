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


def test_rows_of_another_shape_wait_for_a_batch_of_their_own():
    shapes = []

    def run(batch):
        shapes.append(batch.shape)
        return {"double": batch * 2}

    async def main():
        with ThreadPoolExecutor(1) as executor:
            batcher = DynamicBatcher(run, executor, max_batch_size=8, max_queue_delay_s=0.05)
            small, large = np.ones((1, 2, 2), np.float32), np.ones((1, 3, 3), np.float32)
            answers = await asyncio.gather(*(batcher.submit(rows) for rows in (small, small, large, small)))
            await batcher.close()
            return answers
    answers = asyncio.run(main())
    assert shapes == [(2, 2, 2), (1, 3, 3), (1, 2, 2)]  # the same-sized rows before the odd one go together
    assert [a["double"].shape for a in answers] == [(1, 2, 2), (1, 2, 2), (1, 3, 3), (1, 2, 2)]


def test_a_request_arriving_within_the_delay_joins_the_batch():
    sizes = []

    def run(batch):
        sizes.append(len(batch))
        return {"double": batch * 2}

    async def main():
        with ThreadPoolExecutor(1) as executor:
            batcher = DynamicBatcher(run, executor, max_batch_size=8, max_queue_delay_s=0.5,
                                     preferred_batch_sizes=(2,))
            first = asyncio.ensure_future(batcher.submit(np.ones((1, 1), np.float32)))
            await asyncio.sleep(0.05)
            second = await batcher.submit(np.ones((1, 1), np.float32))
            await first
            await batcher.close()
            return second
    assert asyncio.run(main())["double"].tolist() == [[2.0]]
    assert sizes == [2]  # the first waited for the second, up to the delay, and stopped at the preferred size
