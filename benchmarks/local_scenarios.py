"""The scenarios in this process, with no server: the pipeline awaited directly, each detector on the labelled
photos, and each model's cost per image at each batch size."""

from __future__ import annotations

import asyncio
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


def run_on_service_loop(coroutine):
    """Run `coroutine` on the event loop the service runs on (uvicorn picks uvloop, requirements/serve.txt): asyncio's
    own loop wakes itself through a pipe for every thread hand-off, measured at several ms of CPU per request."""
    import uvloop
    return uvloop.run(coroutine)


def detectors(ctx: Context) -> list[dict]:
    """Every detector on the labelled set (recall and precision against the hand boxes) and on every photo
    of every workload (ms per image), one image at a time, in this process."""
    from faceserve.dev import accuracy
    from faceserve.pipeline import imaging
    from faceserve.services import Services

    services = Services.build()
    files = sorted({f for w in ctx.workloads.values() for f in w.files})
    images = [imaging.decode(f.read_bytes()) for f in files]
    labelled, faceless = accuracy.labelled_photos(), accuracy.faceless_photos()
    rows, reps = [], 3 if ctx.config.duration_s >= 5 else 1

    async def measure():
        await services.resources.start()
        for name in services.resources.pipeline.detectors:
            faces = {f.name: len(await services.resources.pipeline.detect(im, name)) for f, im in zip(files, images)}
            matching = accuracy.Matching(0, 0, 0)
            for photo in labelled:
                found = await services.resources.pipeline.detect(photo.image, name)
                matching += accuracy.match([d.box for d in found], photo.faces)
            stray_faceless = {k: len(await services.resources.pipeline.detect(im, name)) for k, im in faceless.items()}
            per_image = {}
            for f, im in zip(files, images):
                t = time.perf_counter()
                for _ in range(reps):
                    await services.resources.pipeline.detect(im, name)
                per_image[f.name] = round((time.perf_counter() - t) / reps * 1e3, 2)
            loop = asyncio.get_running_loop()
            latencies, stop_at, i = [], loop.time() + ctx.config.duration_s, 0
            cpu = CpuWindow([psutil.Process().pid])
            with TreeMonitor([psutil.Process().pid]) as mon:
                cpu.start()
                started = loop.time()
                while loop.time() < stop_at:
                    t = loop.time()
                    await services.resources.pipeline.detect(images[i % len(images)], name)
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
                         "ms_by_workload": by_workload,
                         "labelled": {"found": matching.found, "faces": matching.labelled, "stray": matching.stray,
                                      "recall": round(matching.recall, 3), "precision": round(matching.precision, 3)},
                         "faces_in_faceless_photos": stray_faceless})
            ctx.advance(f"detectors {name}")
        await services.close()
    asyncio.run(measure())
    return rows


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
