"""Closed-loop Locust users posting real JPEGs as multipart `image` to an analyze endpoint.

Run by benchmarks.loadgen.run_locust as `locust --headless`; settings come from the environment.
This file owns the measured window, because Locust's own `-t` counts spawning and warm-up and its
`--csv` files are rewritten only once a second (the last second of a run can be missing from them):

1. all users spawned, then BENCH_WARMUP_S of warm-up;
2. statistics reset and the server's CPU time read (BENCH_SERVER_PIDS, whole process trees);
3. the window lasts at least BENCH_DURATION_S and until BENCH_MIN_OK requests succeeded, at most BENCH_MAX_S;
4. at its end the server's CPU time is read again and Locust's own CSV writer writes the window's
   statistics to BENCH_OUT_stats.csv / _failures.csv, with BENCH_OUT_window.json beside them; then Locust quits.

Other settings: BENCH_IMAGES (paths joined by os.pathsep), BENCH_PATH (default /analyze), BENCH_FORM
(JSON object of extra form fields, e.g. {"detector": "haar"}; the answer must echo each of them).
"""

import csv
import itertools
import json
import os
import sys
import time
from pathlib import Path

import gevent
from locust import FastHttpUser, constant, events, stats, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.monitor import CpuWindow  # noqa: E402

IMAGES = [open(p, "rb").read() for p in os.environ["BENCH_IMAGES"].split(os.pathsep)]
NAMES = [os.path.basename(p) for p in os.environ["BENCH_IMAGES"].split(os.pathsep)]
PATH = os.environ.get("BENCH_PATH", "/analyze")
FORM = json.loads(os.environ.get("BENCH_FORM") or "{}")
EXPECT = [b'"faces"'] + [f'"{k}":{json.dumps(v)}'.encode() for k, v in FORM.items()]
WARMUP_S = float(os.environ.get("BENCH_WARMUP_S", "0"))
DURATION_S = float(os.environ.get("BENCH_DURATION_S", "5"))
MIN_OK = int(os.environ.get("BENCH_MIN_OK", "1"))
MAX_S = float(os.environ.get("BENCH_MAX_S", "60"))
SERVER_PIDS = [int(p) for p in os.environ.get("BENCH_SERVER_PIDS", "").split(",") if p]
OUT = os.environ.get("BENCH_OUT", "locust")
_next = itertools.count()
_run = {"environment": None, "measuring": False}


def _write_csv(path: str, write) -> None:
    with open(path, "w", newline="") as handle:
        write(csv.writer(handle))


def measure(environment) -> None:
    runner = environment.runner
    gevent.sleep(WARMUP_S)
    cpu = CpuWindow(SERVER_PIDS)
    runner.stats.reset_all()
    cpu.start()
    started = time.perf_counter()
    while True:
        gevent.sleep(0.05)
        elapsed = time.perf_counter() - started
        total = runner.stats.total
        ok = total.num_requests - total.num_failures
        if elapsed >= MAX_S or (elapsed >= DURATION_S and ok >= MIN_OK):
            break
    cpu.stop()
    writer = stats.StatsCSV(environment, stats.PERCENTILES_TO_REPORT)
    _write_csv(OUT + "_stats.csv", writer.requests_csv)
    _write_csv(OUT + "_failures.csv", writer.failures_csv)
    window = {"seconds": round(cpu.seconds, 4), "server_cpu_s": None if not SERVER_PIDS else round(cpu.cpu_s, 4),
              "min_ok": MIN_OK, "capped": ok < MIN_OK}
    Path(OUT + "_window.json").write_text(json.dumps(window))
    runner.quit()


@events.init.add_listener
def _keep_environment(environment, **_):
    _run["environment"] = environment


@events.spawning_complete.add_listener
def _start_window(user_count, **_):
    if not _run["measuring"]:
        _run["measuring"] = True
        gevent.spawn(measure, _run["environment"])


class Analyze(FastHttpUser):
    wait_time = constant(0)  # closed loop: each user sends its next request when the last one answers

    @task
    def analyze(self):
        i = next(_next) % len(IMAGES)
        with self.client.post(PATH, files={"image": (NAMES[i], IMAGES[i], "image/jpeg")}, data=FORM or None,
                              name=PATH, catch_response=True) as response:
            body = response.content or b""
            if response.status_code != 200 or not all(e in body for e in EXPECT):
                response.failure(f"{response.status_code}: {body[:200]!r}")
