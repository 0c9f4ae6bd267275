"""The job worker over a real SQLite store: a slow image keeps its lease while it is analysed."""

from __future__ import annotations

import asyncio

from faceserve.jobs import JobLimits, JobQueue, NewItem
from faceserve.jobs.worker import JobWorker
from faceserve.store import open_store


def test_a_slow_image_is_not_taken_by_another_process_while_analysed(tmp_path):
    with open_store(f"sqlite:///{tmp_path / 'faceserve.db'}") as store:
        queue = JobQueue(store, JobLimits(), lease_s=0.6)
        job = queue.submit("key", [NewItem("slow.jpg", image=b"x")], {})
        taken_by_others = []

        async def slow_analysis(item):
            for _ in range(4):  # 2 s: more than three leases
                await asyncio.sleep(0.5)
                taken_by_others.extend(await asyncio.to_thread(queue.claim, "another process"))
            return {"faces": [], "name": item.name}

        async def scenario():
            async def opened():
                return queue
            worker = JobWorker(opened, slow_analysis, idle_s=0.05)
            worker.start()
            while queue.status(job).state != "done":
                await asyncio.sleep(0.05)
            await worker.stop()

        asyncio.run(asyncio.wait_for(scenario(), 30))
        assert taken_by_others == []
        assert [line["analysis"] for line in queue.results(job)] == [{"faces": [], "name": "slow.jpg"}]
