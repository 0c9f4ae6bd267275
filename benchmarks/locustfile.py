"""Closed-loop Locust users posting real JPEGs as multipart `image` to an analyze endpoint.

Run by benchmarks.loadgen as `locust --headless --csv ...`; settings come from the environment:
BENCH_IMAGES (paths joined by os.pathsep), BENCH_PATH (default /analyze), BENCH_WARMUP_S
(statistics are reset that long after all users have spawned, so warm-up is excluded).
"""

import itertools
import os

import gevent
from locust import FastHttpUser, constant, events, task

IMAGES = [open(p, "rb").read() for p in os.environ["BENCH_IMAGES"].split(os.pathsep)]
NAMES = [os.path.basename(p) for p in os.environ["BENCH_IMAGES"].split(os.pathsep)]
PATH = os.environ.get("BENCH_PATH", "/analyze")
WARMUP_S = float(os.environ.get("BENCH_WARMUP_S", "0"))
_next = itertools.count()


@events.spawning_complete.add_listener
def _reset_after_warmup(user_count, **_):
    runner = _reset_after_warmup.runner

    def reset():
        gevent.sleep(WARMUP_S)
        runner.stats.reset_all()
    gevent.spawn(reset)


@events.init.add_listener
def _keep_runner(environment, **_):
    _reset_after_warmup.runner = environment.runner


class Analyze(FastHttpUser):
    wait_time = constant(0)  # closed loop: each user sends its next request when the last one answers

    @task
    def analyze(self):
        i = next(_next) % len(IMAGES)
        with self.client.post(PATH, files={"image": (NAMES[i], IMAGES[i], "image/jpeg")},
                              name=PATH, catch_response=True) as response:
            if response.status_code != 200 or b'"faces"' not in (response.content or b""):
                response.failure(f"{response.status_code}: {(response.content or b'')[:200]!r}")
