"""Where Haar's CPU goes on the `single` workload's 12 640x480 frames, and what sharing one cascade between threads
did: `PYTHONPATH=. .venv/bin/python benchmarks/results/2026-12-07-seed-fair/haar_cost.py` (its output: haar_cost.txt).
CPU is time.process_time() (every thread of this process); wall is per photo as the callers saw it. With
`--minimum`, only the labelled sets under a 24 and a 32 px minimum (the second part of haar_cost.txt)."""

import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2

from benchmarks import workload
from faceserve.dev import accuracy
from faceserve.models.detectors.haar import CASCADE, HaarDetector
from faceserve.pipeline import imaging

PARAMS = dict(scaleFactor=1.1, minNeighbors=5, minSize=(24, 24))


def frames():
    """The `single` workload's 12 JPEGs as the service decodes them. The benchmark keeps a frame where BlazeFace finds
    one face, which it does on all 12 (results.json's meta): one made-up box each stands in for it here."""
    with tempfile.TemporaryDirectory() as folder:
        built = workload.build(Path(folder), lambda image, detector: [(0, 0, 100, 100)])
        return [imaging.decode(f.read_bytes()) for f in built["single"].files]


def timed(detect, images, threads, callers, reference=None, rounds=2):
    cv2.setNumThreads(threads)
    detect(images[0])
    wrong, errors = [], []

    def run(start):
        for _ in range(rounds):
            for i in [*range(start, len(images)), *range(start)]:
                try:
                    found = len(detect(images[i]))
                    if reference is not None and found != reference[i]:
                        wrong.append(i)
                except cv2.error:
                    errors.append(i)
    cpu, wall = time.process_time(), time.perf_counter()
    threads_ = [threading.Thread(target=run, args=(3 * k % len(images),)) for k in range(callers)]
    [t.start() for t in threads_]
    [t.join() for t in threads_]
    calls = rounds * len(images) * callers
    return (time.process_time() - cpu) * 1e3 / calls, (time.perf_counter() - wall) * 1e3 / calls, wrong, errors, calls


def main():
    images = frames()
    gray = [cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) for image in images]
    after = HaarDetector()
    shared = cv2.CascadeClassifier(CASCADE)
    reference = [len(after.detect_sync(image)) for image in images]
    print(f"OpenCV {cv2.__version__}, {cv2.getNumberOfCPUs()} CPUs; faces found alone: {sum(reference)} of "
          f"{len(images)} frames {reference}")
    ways = {"as served: detectMultiScale3, level weights": lambda g: shared.detectMultiScale3(
                g, outputRejectLevels=True, **PARAMS)[0],
            "detectMultiScale, no level weights": lambda g: shared.detectMultiScale(g, **PARAMS)}
    for name, detect in ways.items():
        for threads in (2, 1):
            cpu, wall, *_ = timed(detect, gray, threads, 1)
            print(f"{name}, OpenCV threads={threads}: {cpu:.1f} CPU ms/photo, {wall:.1f} wall ms/photo")
    cv2.setNumThreads(1)
    for low, high in ((24, 48), (48, 96), (96, 192), (192, 480)):
        cpu, *_ = timed(lambda g: shared.detectMultiScale(g, scaleFactor=1.1, minNeighbors=5, minSize=(low, low),
                                                          maxSize=(high, high)), gray, 1, 1)
        print(f"only faces of {low}-{high} px, 1 thread: {cpu:.1f} CPU ms/photo")
    for minimum in (32, 48, 64):
        cpu, *_ = timed(lambda g: shared.detectMultiScale(g, scaleFactor=1.1, minNeighbors=5,
                                                          minSize=(minimum, minimum)), gray, 1, 1)
        print(f"minimum {minimum} px instead of 24, 1 thread: {cpu:.1f} CPU ms/photo")

    def before(image):  # the detector as it was: one cascade for every thread
        return shared.detectMultiScale3(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), outputRejectLevels=True,
                                        **PARAMS)[0]
    for name, detect in (("before: one cascade shared", before), ("after: a cascade per thread", after.detect_sync)):
        for callers in (1, 4):
            cpu, wall, wrong, errors, calls = timed(detect, images, 2, callers, reference)
            print(f"{name}, {callers} caller(s) at once: {cpu:.1f} CPU ms/photo, {wall:.1f} wall ms/photo; "
                  f"{len(wrong)} answers differing from one caller's and {len(errors)} OpenCV errors of {calls}")
    labelled = accuracy.labelled_photos()
    for name, detect in (("before: one cascade shared", before), ("after: a cascade per thread", after.detect_sync)):
        _, _, wrong, errors, calls = timed(detect, [p.image for p in labelled], 2, 4,
                                           [len(after.detect_sync(p.image)) for p in labelled], rounds=1)
        print(f"{name}, the 9 labelled photos (6 sizes) from 4 callers: {len(wrong)} answers differing, "
              f"{len(errors)} OpenCV errors of {calls}")


def labelled_by_minimum():
    """Every labelled set (faceserve.dev.accuracy) under the served 24 px minimum and under 32 px."""
    sets = accuracy.labelled_sets()
    cv2.setNumThreads(1)
    for minimum in (24, 32):
        detector, judged, photos, cpu = HaarDetector(min_size=minimum), [], 0, time.process_time()
        for name, labelled in sets.items():
            total = sum((accuracy.judge(p, [d.box for d in detector.detect_sync(p.image)]) for p in labelled),
                        accuracy.Matching(0, 0, 0))
            judged.append(f"{name} {total.found}/{total.labelled}, {total.stray} stray")
            photos += len(labelled)
        print(f"minimum {minimum} px, 1 thread: {(time.process_time() - cpu) * 1e3 / photos:.0f} CPU ms/photo over "
              f"{photos} photos; " + "; ".join(judged))


if __name__ == "__main__":
    labelled_by_minimum() if "--minimum" in sys.argv else main()
