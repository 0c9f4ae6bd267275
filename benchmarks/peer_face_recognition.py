"""The `face_recognition` side of the peer scenario (benchmarks/peer.py). It runs in the peer's own interpreter
(`faceserve.dev.peers.python()`: dlib-bin + face_recognition from PyPI), never in the project's: it imports nothing of
faceserve.

stdin: {"paths": [photo, ...], "reps": n}. stdout: one JSON object, its settings and, per photo, every face box
(x1, y1, x2, y2 in pixels) `face_recognition.face_locations` finds with its defaults (HOG, upsampled once), the
128-d encoding of the largest face (`face_encodings` with its defaults: 5-point landmarks, one jitter; null when no
face is found), and the least of `reps` timings of detection and of encoding apart, wall and CPU ms.
"""

from __future__ import annotations

import json
import sys
import time
from importlib import metadata

import dlib
import face_recognition

DETECTION = {"model": "hog", "number_of_times_to_upsample": 1}  # face_locations' defaults, named
ENCODING = {"model": "small", "num_jitters": 1}  # face_encodings' defaults, named


def timed(call):
    """call()'s answer, its wall ms and this process's CPU ms (every thread's)."""
    wall, cpu = time.perf_counter(), time.process_time()
    answer = call()
    return answer, (time.perf_counter() - wall) * 1e3, (time.process_time() - cpu) * 1e3


def area(location) -> int:
    top, right, bottom, left = location
    return (bottom - top) * (right - left)


def measure(path: str, reps: int) -> dict:
    image = face_recognition.load_image_file(path)  # PIL's decode converted to RGB, as faceserve's photos.load_rgb
    least = {"detect_ms": float("inf"), "detect_cpu_ms": float("inf"),
             "encode_ms": float("inf"), "encode_cpu_ms": float("inf")}
    for _ in range(reps):
        locations, wall, cpu = timed(lambda: face_recognition.face_locations(image, **DETECTION))
        least["detect_ms"], least["detect_cpu_ms"] = min(least["detect_ms"], wall), min(least["detect_cpu_ms"], cpu)
        if not locations:
            continue
        largest = max(locations, key=area)
        (encoding,), wall, cpu = timed(lambda: face_recognition.face_encodings(image, [largest], **ENCODING))
        least["encode_ms"], least["encode_cpu_ms"] = min(least["encode_ms"], wall), min(least["encode_cpu_ms"], cpu)
    return {"path": path,
            "boxes": [[left, top, right, bottom] for top, right, bottom, left in locations],
            "encoding": [float(v) for v in encoding] if locations else None,
            **{k: round(v, 2) if v != float("inf") else None for k, v in least.items()}}


def main() -> None:
    request = json.load(sys.stdin)
    paths, reps = request["paths"], max(1, int(request.get("reps", 1)))
    if paths:  # the first call of each pays for buffers the later ones reuse
        image = face_recognition.load_image_file(paths[0])
        face_recognition.face_encodings(image, face_recognition.face_locations(image, **DETECTION)[:1], **ENCODING)
    photos = [measure(path, reps) for path in paths]
    # face_recognition 1.3.0 still calls itself 1.2.3 (`__version__`): the installed distributions' versions
    json.dump({"library": f"face_recognition {metadata.version('face-recognition')} "
                          f"(dlib-bin {metadata.version('dlib-bin')})",
               "detection": DETECTION, "encoding": ENCODING, "dlib_uses_blas": bool(dlib.DLIB_USE_BLAS),
               "dlib_uses_cuda": bool(dlib.DLIB_USE_CUDA), "reps": reps, "photos": photos}, sys.stdout)


if __name__ == "__main__":
    main()
