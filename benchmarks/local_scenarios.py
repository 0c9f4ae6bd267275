"""The scenarios in this process, with no server: the pipeline awaited directly, each detector on the labelled
photos, and each model's cost per image at each batch size."""

from __future__ import annotations

import asyncio
import dataclasses
import time

import psutil

from benchmarks import loadgen
from benchmarks.monitor import CpuWindow, TreeMonitor
from benchmarks.sweeps import Context, mean_batch, measured_loop


def inprocess(ctx: Context) -> list[dict]:
    """The pipeline awaited directly in this process (decode included) with the service's default detector, no HTTP:
    this machine's limit for what the service does per request."""
    from faceserve.services import Services

    services = Services.build()
    cfg, rows = ctx.config, []

    async def sweep():
        await services.resources.start()
        for _ in ctx.each_workload():
            await one_workload(ctx.images)

    async def one_workload(images):
        backend = services.resources.pipeline.backend

        async def call(i: int):
            pixels = await services.images.image(upload=images[i % len(images)])
            await services.resources.pipeline.analyze(pixels)
        for c in cfg.concurrencies:
            before = {k: [v["rows"], v["executions"]] for k, v in backend.statistics().items()}
            result, peak_rss_mb = await measured_loop(ctx, call, c, [psutil.Process().pid])
            after = {k: [v["rows"], v["executions"]] for k, v in backend.statistics().items()}
            batch, per_model = mean_batch(before, after)
            rows.append(ctx.row("inprocess", c, result, mean_batch=batch, batch_by_model=per_model,
                                peak_rss_mb=peak_rss_mb))
            ctx.advance(f"inprocess {ctx.workload} c={c}")

    async def run():
        await sweep()
        await services.close()
    run_on_service_loop(run())
    return rows


class Variant:
    """A way of detecting measured beside the served detectors and not served: the default without its second
    family or before its cascade, and the cascade with a mirror pass or a padded frame (what issue 22 asked to measure
    before choosing)."""

    def __init__(self, name: str, inner, mirror: bool = False, pad: float = 0.0):
        self.name, self.inner, self.spec, self.mirror, self.pad = name, inner, inner.spec, mirror, pad

    def unsure(self, detection) -> bool:
        return self.inner.unsure(detection)

    async def detect(self, image):
        import numpy as np

        from faceserve.models.detectors import nms

        found = await self._pass(image)
        if not self.mirror:
            return found
        width = image.shape[1]
        found += [dataclasses.replace(d, box=(width - d.box[2], d.box[1], width - d.box[0], d.box[3]))
                  for d in await self._pass(np.ascontiguousarray(image[:, ::-1]))]
        if not found:
            return []
        return nms(np.array([d.box for d in found], np.float32), np.array([d.score for d in found], np.float32),
                   self.spec.nms_iou, image.shape[:2])

    async def _pass(self, image):
        import numpy as np

        if not self.pad:
            return await self.inner.detect(image)
        border = round(self.pad * max(image.shape[:2]))
        padded = np.pad(image, ((border, border), (border, border), (0, 0)))
        return [dataclasses.replace(d, box=tuple(v - border for v in d.box)) for d in await self.inner.detect(padded)]


class SecondOnEveryPhoto:
    """The default with its second family run on every photo, not only where the coarse pass leaves room: what the
    gate saves, and whether it loses faces."""

    def __init__(self, auto, cascade):
        self.auto, self.cascade, self.spec = auto, cascade, auto.spec

    def unsure(self, detection) -> bool:
        return self.auto.unsure(detection)

    async def detect(self, image):
        from faceserve.models.detectors import merge

        own = await self.cascade.detect(image)
        return merge(own + self.auto.seconded(own, await self.auto.second.detect(image)), self.spec.nms_iou)


class MeshLooks:
    """The default with its face mesh looking at the unsure boxes otherwise than served: `looks` looks at most (1: only
    the first), the first turned by the detector's eye line or not (`eyes`); what `LandmarkModel.locate` was chosen
    against."""

    def __init__(self, auto, looks: int, eyes: bool):
        self.auto, self.spec, self.mesh_looks, self.eyes = auto, auto.spec, looks, eyes

    def unsure(self, detection) -> bool:
        return self.auto.unsure(detection)

    async def detect(self, image):
        found = await self.auto.detect(image)
        return found if self.eyes else [dataclasses.replace(d, keypoints=()) for d in found]


async def detect_with(pipeline, detector, image):
    """`pipeline.detect_with(detector, image)`, the face mesh taking the looks a `MeshLooks` variant gives it."""
    from faceserve.models import landmarks

    looks = getattr(detector, "mesh_looks", None)
    if looks is None:
        return await pipeline.detect_with(detector, image)
    served, landmarks.MOST_LOOKS = landmarks.MOST_LOOKS, looks
    try:
        return await pipeline.detect_with(detector, image)
    finally:
        landmarks.MOST_LOOKS = served


# The frame padding measured: a tenth of the long side on every side (the padded photo is scaled like any other).
EDGE_PAD = 0.1
# The second family's threshold in the variant that lowers it (MediaPipe's own, served: 0.5).
SECOND_FLOOR = 0.4


def variants(pipeline) -> dict:
    """Every served detector by name, and the default's unserved variants."""
    import copy

    from faceserve.models import landmarks
    from faceserve.models.detectors import AutoDetector

    found = {name: pipeline.detector(name) for name in pipeline.detectors}
    auto = found.get(AutoDetector.name)
    if auto is None:
        return found
    cascade = copy.copy(auto)
    cascade.second = None  # this copy's own: FaceBoxes' cascade alone, the default until its second family
    before = copy.copy(cascade)
    before.unsure_floor = None  # the sure boxes only, as before issue 22
    found["auto's cascade alone"] = Variant("auto's cascade alone", cascade)
    found["auto before the cascade"] = Variant("auto before the cascade", before)
    if auto.second is not None:
        lower = copy.copy(auto.second)
        lower.spec = dataclasses.replace(lower.spec, score_threshold=SECOND_FLOOR)
        from_floor = copy.copy(auto)
        from_floor.second = lower
        found[f"auto, BlazeFace full from {SECOND_FLOOR}"] = from_floor
        found["auto, BlazeFace full on every photo"] = SecondOnEveryPhoto(auto, cascade)
    for name, looks, eyes in (("auto, one mesh look square with the image", 1, False),
                              ("auto, one mesh look turned by BlazeFace's eyes", 1, True),
                              ("auto, mesh looks turned by its own reading", landmarks.MOST_LOOKS, False)):
        found[name] = MeshLooks(auto, looks, eyes)
    for name, kwargs in (("cascade + mirror pass", dict(mirror=True)), ("cascade + edge padding", dict(pad=EDGE_PAD)),
                         ("cascade + mirror + padding", dict(mirror=True, pad=EDGE_PAD))):
        found[name] = Variant(name, cascade, **kwargs)
    return found


def run_on_service_loop(coroutine):
    """Run `coroutine` on the event loop the service runs on (uvicorn picks uvloop, requirements/serve.txt): asyncio's
    own loop wakes itself through a pipe for every thread hand-off, measured at several ms of CPU per request."""
    import uvloop
    return uvloop.run(coroutine)


def detectors(ctx: Context) -> list[dict]:
    """Every detector (and the default's unserved variants) on every labelled set (recall and precision at IoU >= 0.4,
    ms per photo), on the photos without faces, and on every photo of every workload (ms per image), one image at a
    time, in this process. Detection is what `Pipeline.detect_with` answers: the default's unsure boxes are judged by
    the face mesh there. Each photo's ms are timed round-robin over the detectors, `reps` times, keeping each one's
    least: a machine whose load drifts during the run weighs on every detector alike."""
    from faceserve.dev import accuracy
    from faceserve.pipeline import imaging
    from faceserve.services import Services

    services = Services.build()
    files = sorted({f for w in ctx.workloads.values() for f in w.files})
    images = [imaging.decode(f.read_bytes()) for f in files]
    sets, faceless = accuracy.labelled_sets(), accuracy.faceless_photos()
    timed = [(None, f.name, im) for f, im in zip(files, images)] + [
        (set_name, i, photo.image) for set_name, labelled in sets.items() for i, photo in enumerate(labelled)]
    rows, reps = [], 3 if ctx.config.duration_s >= 5 else 2

    async def measure():
        await services.resources.start()
        pipeline = services.resources.pipeline
        chosen = variants(pipeline)
        judged = {}
        for name, detector in chosen.items():  # every answer first: each input size is seen once before timing
            faces = {f.name: len(await detect_with(pipeline, detector, im)) for f, im in zip(files, images)}
            by_set = {}
            for set_name, labelled in sets.items():
                matching = accuracy.Matching(0, 0, 0)
                for photo in labelled:
                    found = await detect_with(pipeline, detector, photo.image)
                    matching += accuracy.judge(photo, [d.box for d in found])
                by_set[set_name] = _judged(matching)
            stray_faceless = {k: len(await detect_with(pipeline, detector, im)) for k, im in faceless.items()}
            judged[name] = faces, by_set, stray_faceless
        least = {name: {} for name in chosen}
        for _ in range(reps):
            for set_name, key, image in timed:
                for name, detector in chosen.items():
                    t = time.perf_counter()
                    await detect_with(pipeline, detector, image)
                    spent = (time.perf_counter() - t) * 1e3
                    least[name][set_name, key] = min(spent, least[name].get((set_name, key), spent))
        for name, detector in chosen.items():
            faces, by_set, stray_faceless = judged[name]
            per_image = {f.name: round(least[name][None, f.name], 2) for f in files}
            for set_name, labelled in sets.items():
                by_set[set_name]["ms_per_image"] = round(
                    sum(least[name][set_name, i] for i in range(len(labelled))) / len(labelled), 2)
            loop = asyncio.get_running_loop()
            latencies, stop_at, i = [], loop.time() + ctx.config.duration_s, 0
            cpu = CpuWindow([psutil.Process().pid])
            with TreeMonitor([psutil.Process().pid]) as mon:
                cpu.start()
                started = loop.time()
                while loop.time() < stop_at:
                    t = loop.time()
                    await detect_with(pipeline, detector, images[i % len(images)])
                    latencies.append((loop.time() - t) * 1e3)
                    i += 1
                result = loadgen._result(len(latencies), 0, loop.time() - started, latencies)
                cpu.stop()
            result["load_generator"] = "sequential loop"
            by_workload = {w.name: round(sum(per_image[f.name] for f in w.files) / len(w.files), 2)
                           for w in ctx.workloads.values() if w.files}
            rows.append({**ctx.row("detectors", 1, result, variant=name, mean_batch=None,
                                   peak_rss_mb=mon.peak_rss_mb, cpu_percent=cpu.percent),
                         "workload": "all", "faces_by_image": faces, "ms_by_image": per_image,
                         "ms_by_workload": by_workload, "served": name in pipeline.detectors,
                         **({"labelled": by_set["hand-boxed"], "sets": by_set,
                             "all_sets": _all_sets(by_set, sets)} if by_set else {}),
                         "faces_in_faceless_photos": stray_faceless})
            ctx.advance(f"detectors {name}")
        await services.close()
    asyncio.run(measure())
    return rows


def _judged(matching) -> dict:
    return {"found": matching.found, "faces": matching.labelled, "stray": matching.stray,
            "recall": round(matching.recall, 3), "precision": round(matching.precision, 3)}


def _all_sets(by_set: dict, sets: dict) -> dict:
    """Every labelled set pooled: faces found over faces, and ms per photo over every photo."""
    from faceserve.dev.accuracy import Matching

    pooled = sum((Matching(s["found"], s["faces"], s["stray"]) for s in by_set.values()), Matching(0, 0, 0))
    photos = sum(len(sets[name]) for name in by_set)
    spent = sum(s["ms_per_image"] * len(sets[name]) for name, s in by_set.items())
    return _judged(pooled) | {"ms_per_image": round(spent / photos, 2)}


def auto_passes(ctx: Context) -> list[dict]:
    """How often the default detector (`auto`) runs its second, fine pass on each workload, and what it costs: every
    photo detected one at a time, each call of the detector model timed (the first is the coarse pass, any other a
    fine one). One row per workload: detection alone, per image."""
    from faceserve.pipeline import imaging
    from faceserve.services import Services

    services = Services.build()
    reps = 3 if ctx.config.duration_s >= 5 else 1
    rows = []

    async def measure():
        await services.resources.start()
        pipeline = services.resources.pipeline
        detector = pipeline.detector(None)
        backend, calls = pipeline.backend, []
        infer = backend.infer

        async def timed_infer(spec, batch):
            started = time.perf_counter()
            try:
                return await infer(spec, batch)
            finally:
                if spec is detector.spec:
                    calls.append((tuple(batch.shape[1:3]), (time.perf_counter() - started) * 1e3))
        backend.infer = timed_infer
        try:
            for name, work in ctx.workloads.items():
                per_image = {}
                for file in work.files:
                    image = imaging.decode(file.read_bytes())
                    await pipeline.detect(image, None)  # warm: the first call at an input size is dearer
                    calls.clear()
                    started = time.perf_counter()
                    for _ in range(reps):
                        await pipeline.detect(image, None)
                    detect_ms = (time.perf_counter() - started) * 1e3 / reps
                    passes = len(calls) // reps
                    per_image[file.name] = {
                        "detect_ms": round(detect_ms, 2), "passes": passes,
                        "coarse_ms": round(sum(ms for _, ms in calls[::passes]) / reps, 2),
                        "fine_ms": round(sum(ms for i, (_, ms) in enumerate(calls) if i % passes) / reps, 2),
                        "inputs": sorted({f"{w}x{h}" for (h, w), _ in calls})}
                with_fine = [v for v in per_image.values() if v["passes"] > 1]
                latencies = [v["detect_ms"] for v in per_image.values()]
                result = loadgen._result(len(latencies), 0, sum(latencies) / 1e3, latencies)
                result["load_generator"] = "sequential loop"
                rows.append({**ctx.row("auto-passes", 1, result, variant=detector.name, mean_batch=None,
                                       peak_rss_mb={}, cpu_percent=None),
                             "workload": name, "images": len(per_image), "fine_pass_images": len(with_fine),
                             "fine_pass_ms_when_run": _mean([v["fine_ms"] for v in with_fine]),
                             "fine_pass_ms_per_image": _mean([v["fine_ms"] for v in per_image.values()]),
                             "coarse_ms": _mean([v["coarse_ms"] for v in per_image.values()]),
                             "detect_ms": _mean(latencies), "per_image": per_image})
        finally:
            backend.infer = infer
            await services.close()
    asyncio.run(measure())
    ctx.advance("auto-passes")
    return rows


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 2) if values else None


BATCH_SIZES = (1, 4, 8, 16, 32)


def batch_cost(ctx: Context) -> list[dict]:
    """Each model alone in onnxruntime (1 intra-op thread): time per image at each batch size.

    Throughput here is images/s and latency is per batch. It says what batching can buy on
    this hardware before any server is involved.
    """
    import onnxruntime as ort

    from convert.parity import random_inputs
    from faceserve.models.repository import Repository
    from faceserve.settings import Settings

    repository = Repository.load(Settings.from_env().repository)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    seconds = max(0.3, ctx.config.duration_s / 8)
    rows = []
    for name, spec in repository.specs.items():
        session = ort.InferenceSession(str(repository.model_file(name)), options,
                                       providers=["CPUExecutionProvider"])
        for size in BATCH_SIZES:
            batch = random_inputs(spec, size)[0]  # any-size models at parity's size
            feed = {spec.input_name: batch}
            session.run(None, feed)  # warm-up
            result = loadgen.timed_per_item(lambda _: session.run(None, feed), 1, seconds)
            result["throughput"] = round(result["throughput"] * size, 2)
            rows.append({**ctx.row("batch-cost", 1, result, variant=f"{name}/batch-{size}", mean_batch=float(size),
                                   peak_rss_mb={}, cpu_percent=None),
                         "workload": "random", "ms_per_image": round(result["p50_ms"] / size, 3)})
    ctx.advance("batch-cost")
    return rows
