"""Dynamic batching for the embedded backend, configured like Triton's.

Requests for one model wait in a queue; a worker takes the first, gathers more
until the largest preferred batch size (else max_batch_size) is reached or
max_queue_delay has passed, runs them as one batch in a thread and hands each
caller its own rows back. Concurrent requests therefore share model calls, as
they do behind Triton.
"""

from __future__ import annotations

import asyncio
import dataclasses
from concurrent.futures import Executor
from typing import Callable

import numpy as np

RunBatch = Callable[[np.ndarray], dict[str, np.ndarray]]


@dataclasses.dataclass
class _Pending:
    rows: np.ndarray
    future: asyncio.Future


class DynamicBatcher:
    def __init__(self, run: RunBatch, executor: Executor, *, max_batch_size: int,
                 max_queue_delay_s: float, preferred_batch_sizes: tuple[int, ...] = (), instances: int = 1):
        self._run = run
        self._executor = executor
        self._max_rows = max_batch_size
        self._enough_rows = min(max(preferred_batch_sizes, default=max_batch_size), max_batch_size)
        self._delay = max_queue_delay_s
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._carry: list[_Pending] = []
        self._workers = [asyncio.create_task(self._work()) for _ in range(instances)]
        self.batches = 0  # statistics, as Triton's batch_stats: executions and rows
        self.rows = 0

    async def submit(self, rows: np.ndarray) -> dict[str, np.ndarray]:
        future = asyncio.get_running_loop().create_future()
        await self._queue.put(_Pending(rows, future))
        return await future

    async def _gather(self) -> list[_Pending]:
        first = self._carry.pop() if self._carry else await self._queue.get()
        group, count = [first], len(first.rows)
        deadline = asyncio.get_running_loop().time() + self._delay
        while count < self._enough_rows:
            try:
                item = self._queue.get_nowait()
            except asyncio.QueueEmpty:
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), remaining)
                except TimeoutError:
                    break
            # rows of another shape (a detector that takes any image size) wait for a batch of their own
            if count + len(item.rows) > self._max_rows or item.rows.shape[1:] != first.rows.shape[1:]:
                self._carry.append(item)
                break
            group.append(item)
            count += len(item.rows)
        return group

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            group = await self._gather()
            group = [p for p in group if not p.future.done()]  # callers that gave up
            if not group:
                continue
            batch = group[0].rows if len(group) == 1 else np.concatenate([p.rows for p in group])
            try:
                outputs = await loop.run_in_executor(self._executor, self._run, batch)
            except Exception as exc:  # the callers get the error, the worker lives on
                for p in group:
                    if not p.future.done():
                        p.future.set_exception(exc)
                continue
            self.batches += 1
            self.rows += len(batch)
            start = 0
            for p in group:
                end = start + len(p.rows)
                if not p.future.done():
                    p.future.set_result({k: v[start:end] for k, v in outputs.items()})
                start = end

    async def close(self) -> None:
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
