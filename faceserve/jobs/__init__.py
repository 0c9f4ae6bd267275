"""Asynchronous jobs: many images submitted at once, analysed in the background, their results kept.

What belongs here: the jobs' tables (`migrations.py`), the queue over the shared store (`queue.py`: submit within
the limits, claim work under a lease so that any number of service processes share it, complete, cancel, status,
results; `Job`, the answer a job's status is), a submission's images as named items (`intake.py`: uploads, zip
members, URLs) and the background worker each service process runs (`worker.py`), and the jobs endpoints from a
client's side (`client.py`, for the CLI). What does not: analysing an image (`faceserve.services.jobs` hands the
worker its `analyze`), the endpoints themselves.

State lives in the store, so a restart loses nothing: finished results stay; an item whose worker died is
claimed again once its lease runs out, and after MAX_ATTEMPTS such deaths it is reported failed with the reason.
"""

from faceserve.jobs import intake
from faceserve.jobs.queue import Job, JobLimits, JobQueue, NewItem, WorkItem

__all__ = ["intake", "Job", "JobLimits", "JobQueue", "NewItem", "WorkItem"]
