"""The named scenarios. Each takes the run's Context and returns result rows, or raises Skip(reason)."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import re
import time
import types
from pathlib import Path
from typing import Callable

import httpx
import numpy as np
import psutil

from benchmarks import contention, loadgen, servers
from faceserve.dev import devserver
from benchmarks.monitor import CpuWindow, TreeMonitor
from benchmarks.report import COMPARISON_C
from benchmarks.workload import Workload


class Skip(Exception):
    """The scenario cannot run here; the message says why."""


@dataclasses.dataclass
class Config:
    concurrencies: tuple[int, ...]
    warmup_s: float
    duration_s: float
    heads: tuple[str, ...]              # models swept by triton-heads
    head_concurrencies: tuple[int, ...]
    head_duration_s: float
    seed_workers: int = 2
    seed_threads: int = 4
    min_ok: int = 1              # a measured window also lasts until this many requests succeeded ...
    max_window_s: float = 60.0   # ... but no longer than this
    job_images: int = 500        # jobs-contention: the job's size (the workload's photos repeated) ...
    job_clients: int = 4         # ... and the live closed-loop clients measured beside it


@dataclasses.dataclass
class Context:
    config: Config
    workloads: dict[str, Workload]
    workload: str  # the one swept by the load scenarios
    out: Path
    advance: Callable[[str], None]  # progress: one call per measured run
    stack: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)
    info: dict = dataclasses.field(default_factory=dict)  # per scenario: cold start, notes
    _tritons: dict = dataclasses.field(default_factory=dict)

    @property
    def images(self) -> list[Path]:
        return self.workloads[self.workload].files

    def row(self, scenario: str, concurrency: int, result: dict, variant: str = "", **extra) -> dict:
        return {"scenario": scenario, "variant": variant, "workload": self.workload,
                "concurrency": concurrency, **result, **extra}

    def window(self, duration_s: float | None = None) -> dict:
        """closed_loop's window arguments."""
        cfg = self.config
        return {"warmup_s": cfg.warmup_s, "duration_s": cfg.duration_s if duration_s is None else duration_s,
                "min_ok": cfg.min_ok, "max_s": cfg.max_window_s}

    def triton(self, dynamic_batching: bool, python_models: bool = False):
        """A LocalTriton on the model repository, started once per setting for the whole run. `python_models`:
        also faceserve's pipeline and rotate models, in a server of their own, so that the other scenarios'
        servers (their RSS, their cold start) stay what they were."""
        key = (dynamic_batching, python_models)
        if key in self._tritons:
            return self._tritons[key]
        try:
            from faceserve.dev.triton_local import LocalTriton
        except ImportError as exc:
            raise Skip(f"faceserve.dev.triton_local is not available ({exc})") from None
        from faceserve.settings import Settings
        ports = {k: devserver.free_port() for k in ("http_port", "grpc_port", "metrics_port")}
        started = time.perf_counter()
        try:
            server = self.stack.enter_context(LocalTriton(Settings.from_env().repository,
                                                          dynamic_batching=dynamic_batching,
                                                          python_models=python_models, **ports))
        except Exception as exc:  # a clear line in the report, not a traceback
            raise Skip(f"the local Triton server did not start: {type(exc).__name__}: {exc}"[:400]) from None
        name = f"triton(dynamic_batching={dynamic_batching}{', python_models=True' if python_models else ''})"
        self.info[name] = {"cold_start_s": round(time.perf_counter() - started, 2)}
        self._tritons[key] = (server, ports)
        return server, ports


def _url(address: str) -> str:
    return address if address.startswith("http") else f"http://{address}"


def _triton_pids(server) -> list[int]:
    """tritonserver's pid (its Python-backend stubs are its children, sampled with it)."""
    pid = getattr(server, "pid", None)
    return [pid] if pid and psutil.pid_exists(pid) else []


_METRIC = re.compile(r'^(nv_inference_count|nv_inference_exec_count)\{[^}]*model="([^"]+)"[^}]*\}\s+([0-9.e+]+)',
                     re.M)


def triton_counts(metrics_url: str) -> dict[str, list[float]]:
    """{model: [inferences, executions]} from Triton's Prometheus metrics."""
    text = httpx.get(_url(metrics_url).rstrip("/") + "/metrics", timeout=5).text
    counts: dict[str, list[float]] = {}
    for name, model, value in _METRIC.findall(text):
        counts.setdefault(model, [0.0, 0.0])[name == "nv_inference_exec_count"] += float(value)
    return counts


def mean_batch(before: dict[str, list[float]], after: dict[str, list[float]], models=None) -> tuple[float | None, dict]:
    per_model, rows, runs = {}, 0.0, 0.0
    for model, (n, e) in after.items():
        if models and model not in models:
            continue
        dn, de = n - before.get(model, [0, 0])[0], e - before.get(model, [0, 0])[1]
        if de > 0:
            per_model[model] = round(dn / de, 2)
            rows, runs = rows + dn, runs + de
    return (round(rows / runs, 2) if runs else None), per_model


# ---------------------------------------------------------------------------------------------------

def inprocess(ctx: Context) -> list[dict]:
    """The pipeline awaited directly in this process (decode included), no HTTP: this machine's limit."""
    from faceserve.services import Services

    services = Services.build()
    cfg, images, rows = ctx.config, ctx.images, []

    async def sweep():
        await services.resources.start()
        backend = services.resources.pipeline.backend

        async def call(i: int):
            pixels = await services.images.image(upload=images[i % len(images)])
            await services.resources.pipeline.analyze(pixels, "blazeface")
        for c in cfg.concurrencies:
            before = {k: [v["rows"], v["executions"]] for k, v in backend.statistics().items()}
            with TreeMonitor([psutil.Process().pid]) as mon:
                result = await loadgen.closed_loop(call, c, **ctx.window(), cpu=CpuWindow([psutil.Process().pid]))
            after = {k: [v["rows"], v["executions"]] for k, v in backend.statistics().items()}
            batch, per_model = mean_batch(before, after)
            rows.append(ctx.row("inprocess", c, result, mean_batch=batch, batch_by_model=per_model,
                                peak_rss_mb=mon.peak_rss_mb))
            ctx.advance(f"inprocess c={c}")
        await services.close()
    asyncio.run(sweep())
    return rows


def _locust_sweep(ctx: Context, scenario: str, server, extra_pids=(), metrics_url: str | None = None,
                  concurrencies=None, variant: str = "", form: dict | None = None) -> list[dict]:
    rows, cfg = [], ctx.config
    pids = [server.pid, *extra_pids]
    for c in concurrencies or cfg.concurrencies:
        before = triton_counts(metrics_url) if metrics_url else {}
        with TreeMonitor(pids) as mon:
            result = loadgen.run_locust(server.url, ctx.images, c, cfg.warmup_s, cfg.duration_s, ctx.out / "locust",
                                        label=f"{scenario}{'-' + variant if variant else ''}-c{c}".replace("=", "-"),
                                        form=form, min_ok=cfg.min_ok, max_s=cfg.max_window_s, server_pids=pids)
        batch, per_model = mean_batch(before, triton_counts(metrics_url)) if metrics_url else (None, {})
        rows.append(ctx.row(scenario, c, result, variant=variant, mean_batch=batch, batch_by_model=per_model,
                            peak_rss_mb=mon.peak_rss_mb))
        ctx.advance(" ".join(filter(None, (scenario, variant, f"c={c}"))))
    return rows


def seed_comparison_concurrencies(cfg: Config) -> list[int]:
    """Where service-embedded also runs with Haar, the seed's detector: the targets' comparison point."""
    return [COMPARISON_C] if COMPARISON_C in cfg.concurrencies else [max(cfg.concurrencies)]


def service_embedded(ctx: Context) -> list[dict]:
    """`bentoml serve` with the embedded onnxruntime backend (and its in-process dynamic batcher)."""
    with devserver.bentoml_serve(ctx.out / "logs") as server:
        ctx.info["service-embedded"] = {"cold_start_s": server.cold_start_s}
        rows = _locust_sweep(ctx, "service-embedded", server)
        # The default (auto) against BlazeFace alone, the cheapest detector: what finding small faces costs.
        comparison = seed_comparison_concurrencies(ctx.config)
        rows += _locust_sweep(ctx, "service-embedded", server, variant="detector=blazeface",
                              concurrencies=comparison, form={"detector": "blazeface"})
        # The seed detects with Haar: dearer than BlazeFace per frame, and it misses 9 of these 12 faces, so
        # it skips their heads. Against this point the seed comparison measures serving, not detectors.
        return rows + _locust_sweep(ctx, "service-embedded", server, variant="detector=haar",
                                    concurrencies=comparison, form={"detector": "haar"})


def container(ctx: Context) -> list[dict]:
    """`make image`'s image in a container (host networking, read-only root, a volume): the same sweep as
    service-embedded, for the cost of the container beside `bentoml serve` in the same run."""
    from benchmarks import container as image
    why = image.unavailable()
    if why:
        raise Skip(why)
    with image.container_server() as server:
        ctx.info["container"] = {"cold_start_s": round(server.cold_start_s, 2), "image_mb": server.size_bytes // 10**6}
        return _locust_sweep(ctx, "container", server)


def _service_triton(ctx: Context, protocol: str) -> list[dict]:
    triton, ports = ctx.triton(dynamic_batching=True)
    address = triton.grpc_url if protocol == "grpc" else triton.http_url
    name = f"service-triton-{protocol}"
    with devserver.bentoml_serve(ctx.out / "logs", {"FACESERVE_BACKEND": f"{protocol}://{address}"}) as server:
        ctx.info[name] = {"cold_start_s": server.cold_start_s}
        return _locust_sweep(ctx, name, server, _triton_pids(triton), triton.metrics_url)


def service_triton_grpc(ctx: Context) -> list[dict]:
    """The service in front of the local Triton server over gRPC."""
    return _service_triton(ctx, "grpc")


def service_triton_http(ctx: Context) -> list[dict]:
    """The service in front of the local Triton server over HTTP."""
    return _service_triton(ctx, "http")


def _triton_pipeline(ctx: Context, protocol: str) -> list[dict]:
    """The workload's photos sent straight to the pipeline model, one photo per request, closed loop at the
    service concurrencies; the mean batch is the head models' (their batchers merge crops across requests)."""
    from faceserve.backends.triton import grpc_channel_args
    from faceserve.models.repository import Repository
    from faceserve.settings import Settings
    from faceserve.triton_models import configs
    from faceserve.triton_models.client import bytes_input

    if protocol == "grpc":
        import tritonclient.grpc.aio as module
    else:
        import tritonclient.http.aio as module
    triton, _ = ctx.triton(dynamic_batching=True, python_models=True)
    heads = {spec.name for spec in Repository.load(Settings.from_env().repository).heads.values()}
    pids, name, rows = _triton_pids(triton), f"triton-pipeline-{protocol}", []
    # serialised once, as for triton-heads: the client should cost the server no CPU
    inputs = [bytes_input(module, configs.IMAGE.name, path.read_bytes()) for path in ctx.images]
    outputs = [module.InferRequestedOutput(configs.ANALYSIS.name)]

    async def sweep():
        client = (module.InferenceServerClient(triton.grpc_url, channel_args=grpc_channel_args())
                  if protocol == "grpc" else module.InferenceServerClient(triton.http_url))

        async def call(i: int):
            await client.infer(configs.PIPELINE, [inputs[i % len(inputs)]], outputs=outputs)
        for c in ctx.config.concurrencies:
            before = triton_counts(triton.metrics_url)
            with TreeMonitor(pids) if pids else contextlib.nullcontext() as mon:
                result = await loadgen.closed_loop(call, c, **ctx.window(), cpu=CpuWindow(pids) if pids else None)
            after = triton_counts(triton.metrics_url)
            rows.append(ctx.row(name, c, result, mean_batch=mean_batch(before, after, heads)[0],
                                batch_by_model=mean_batch(before, after)[1],
                                peak_rss_mb=mon.peak_rss_mb if mon else {}))
            ctx.advance(f"{name} c={c}")
        await client.close()
    asyncio.run(sweep())
    return rows


def triton_pipeline_grpc(ctx: Context) -> list[dict]:
    """faceserve's pipeline model on the local Triton, called over gRPC with no service in front."""
    return _triton_pipeline(ctx, "grpc")


def triton_pipeline_http(ctx: Context) -> list[dict]:
    """faceserve's pipeline model on the local Triton, called over HTTP with no service in front."""
    return _triton_pipeline(ctx, "http")


def _face_crops(ctx: Context, spec) -> list[np.ndarray]:
    """One [1, H, W, C] input per face of the workload, cropped by the head's own recipe."""
    from faceserve.models import crops
    from faceserve.pipeline import imaging
    from faceserve.models.detectors import HaarDetector
    inputs, haar = [], HaarDetector()
    for path in ctx.images:
        image = imaging.decode(path.read_bytes())
        inputs += [crops.face_batch(image, [d.box], spec) for d in haar.detect_sync(image)]
    if not inputs:
        raise Skip("no face found in the workload to crop for the heads")
    return inputs


def triton_heads(ctx: Context) -> list[dict]:
    """Each head straight on Triton (gRPC, one face per request), dynamic batching on vs off."""
    import tritonclient.grpc.aio as grpcclient
    from faceserve.models.repository import Repository
    from faceserve.settings import Settings

    specs = Repository.load(Settings.from_env().repository).specs
    cfg, rows = ctx.config, []
    for batching in (True, False):
        triton, ports = ctx.triton(dynamic_batching=batching)
        pids = _triton_pids(triton)
        for head in cfg.heads:
            spec = specs[head]
            crops = _face_crops(ctx, spec)

            async def sweep():
                client = grpcclient.InferenceServerClient(triton.grpc_url)
                out = [grpcclient.InferRequestedOutput(spec.output_names[0])]
                inputs = []  # serialised once, as perf_analyzer does: the client should cost the server no CPU
                for crop in crops:
                    inputs.append(grpcclient.InferInput(spec.input_name, list(crop.shape), "FP32"))
                    inputs[-1].set_data_from_numpy(crop)

                async def call(i: int):
                    await client.infer(head, [inputs[i % len(inputs)]], outputs=out)
                for c in cfg.head_concurrencies:
                    before = triton_counts(triton.metrics_url)
                    with TreeMonitor(pids) if pids else contextlib.nullcontext() as mon:
                        result = await loadgen.closed_loop(call, c, **ctx.window(cfg.head_duration_s),
                                                           cpu=CpuWindow(pids) if pids else None)
                    batch, _ = mean_batch(before, triton_counts(triton.metrics_url), {head})
                    variant = f"{head}/batching-{'on' if batching else 'off'}"
                    rows.append(ctx.row("triton-heads", c, result, variant=variant, mean_batch=batch,
                                        peak_rss_mb=mon.peak_rss_mb if mon else {}))
                    ctx.advance(f"triton-heads {head} batching={'on' if batching else 'off'} c={c}")
                await client.close()
            asyncio.run(sweep())
    return rows


def seed_baseline(ctx: Context) -> list[dict]:
    """The seeds' design: Flask + gunicorn (gthread), Haar, Keras/TF `predict` per face, original artifacts."""
    try:
        import flask  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError as exc:
        raise Skip(f"the seed baseline needs flask and tensorflow ({exc})") from None
    cfg = ctx.config
    with servers.seed_gunicorn(ctx.out / "logs", cfg.seed_workers, cfg.seed_threads) as server:
        ctx.info["seed-baseline"] = {"cold_start_s": server.cold_start_s,
                                     "gunicorn": f"{cfg.seed_workers} gthread workers x {cfg.seed_threads} threads"}
        return _locust_sweep(ctx, "seed-baseline", server)


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


CLUSTER_INSTANCES = (1, 2, 3)


def cluster(ctx: Context) -> list[dict]:
    """nginx in front of 1, 2 and 3 `bentoml serve` instances (one worker each) on one local Triton
    (faceserve.dev.cluster). CPU and RSS are the whole deployment's: nginx, every instance and Triton."""
    from faceserve.dev.cluster import Cluster, NginxError
    rows = []
    for instances in CLUSTER_INSTANCES:
        try:
            # Locust sends no key: nginx listens on 127.0.0.1 only, nothing untrusted reaches it.
            with Cluster(instances, env={"FACESERVE_PRIVATE_DEPLOYMENT": "1"},
                         log_dir=ctx.out / "logs" / f"cluster-{instances}") as deployment:
                entry = types.SimpleNamespace(url=deployment.url, pid=deployment.nginx.process.pid)
                pids = [i.server.pid for i in deployment.instances] + _triton_pids(deployment.triton)
                rows += _locust_sweep(ctx, "cluster", entry, pids, deployment.triton.metrics_url,
                                      variant=f"instances={instances}")
        except NginxError as exc:  # nginx missing or refusing its configuration: a line in the report
            raise Skip(str(exc)) from None
    return rows


# Synthetic galleries for search speed: one face of 1024 floats (faceres' dimension) per identity.
SEARCH_GALLERIES = (1_000, 10_000, 100_000)


def _search_galleries(cfg: Config) -> tuple[int, ...]:
    """Quick runs stop at 10k: the 100k gallery alone is 400 MB of vectors to build."""
    return SEARCH_GALLERIES if cfg.duration_s >= 5 else SEARCH_GALLERIES[:2]


def identity(ctx: Context) -> list[dict]:
    """Identity through the service: the enrolment rate (create + one photo each), then identify beside analyze
    at the comparison concurrency on the workload's photos, against the gallery just enrolled; then exact
    search per face, in process, against synthetic galleries of 1k, 10k and 100k identities; and the
    threshold's evidence: similarity distributions and the DET curve on the identity photos (`similarity.png`)."""
    import tempfile

    from benchmarks import similarity

    rows, cfg = [], ctx.config
    c = seed_comparison_concurrencies(cfg)[0]
    with tempfile.TemporaryDirectory(prefix="faceserve-bench-gallery-") as data, \
            devserver.bentoml_serve(ctx.out / "logs", {"FACESERVE_DATA_DIR": data}) as server:
        ctx.info["identity"] = {"cold_start_s": server.cold_start_s, "similarity": similarity.measure(ctx.out)}
        rows.append(ctx.row("identity", 4, asyncio.run(_enrolments(ctx, server.url, 4)), variant="enrol",
                            mean_batch=None, peak_rss_mb={}, cpu_percent=None))
        ctx.advance("identity enrol")
        for path in ("/analyze", "/identify"):
            with TreeMonitor([server.pid]) as mon:
                result = loadgen.run_locust(server.url, ctx.images, c, cfg.warmup_s, cfg.duration_s, ctx.out / "locust",
                                            path=path, label=f"identity{path.replace('/', '-')}-c{c}",
                                            min_ok=cfg.min_ok, max_s=cfg.max_window_s, server_pids=[server.pid])
            rows.append(ctx.row("identity", c, result, variant=path.strip("/"), mean_batch=None,
                                peak_rss_mb=mon.peak_rss_mb))
            ctx.advance(f"identity {path} c={c}")
    return rows + _search_rows(ctx)


async def _enrolments(ctx: Context, url: str, concurrency: int) -> dict:
    """Closed-loop enrolments: each creates an identity and adds one face from a workload photo."""
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async def enrol(i: int) -> None:
            created = (await client.post("/identities/create", json={"name": f"bench-{i}"})).raise_for_status()
            photo = ctx.images[i % len(ctx.images)]
            (await client.post("/identities/add_faces", data={"identity_id": created.json()["id"]},
                               files={"images": (photo.name, photo.read_bytes(), "image/jpeg")})).raise_for_status()
        return await loadgen.closed_loop(enrol, concurrency, **ctx.window())


def _search_rows(ctx: Context) -> list[dict]:
    from faceserve.gallery.similarity import SimilarityIndex

    rows, rng, dimension = [], np.random.default_rng(0), 1024
    queries = rng.standard_normal((64, dimension)).astype(np.float32)
    for size in _search_galleries(ctx.config):
        index = SimilarityIndex(dimension)
        vectors = rng.standard_normal((size, dimension)).astype(np.float32)
        index.replace([(f"f{i}", f"i{i}", f"person {i}", vectors[i]) for i in range(size)])
        del vectors
        result = loadgen.timed_per_item(lambda i: index.search(queries[i:i + 1], 5), len(queries),
                                        max(1.0, ctx.config.duration_s / 3))
        rows.append(ctx.row("identity", 1, result, variant=f"search {size // 1000}k identities", mean_batch=None,
                            peak_rss_mb={}, cpu_percent=None))
        ctx.advance(f"identity search {size}")
    return rows


def jobs_contention(ctx: Context) -> list[dict]:
    """Live `/analyze` latency (a closed loop of `job_clients`) on the idle service, then while a job of
    `job_images` photos runs through the same service (one zip file to `/jobs/submit`); every line of the job
    compared with a synchronous `/analyze` of its photo (benchmarks/contention.py)."""
    import tempfile

    cfg = ctx.config
    # The job is one upload of ~65 kB x job_images: above the default 20 MB body limit at 500 images.
    env = {"FACESERVE_MAX_BODY_BYTES": str(256 * 2**20)}
    with tempfile.TemporaryDirectory(prefix="faceserve-bench-jobs-") as data, \
            devserver.bentoml_serve(ctx.out / "logs", {**env, "FACESERVE_DATA_DIR": data}) as server, \
            TreeMonitor([server.pid]) as mon:
        measured = asyncio.run(contention.measure(
            server.url, ctx.images, clients=cfg.job_clients, job_images=cfg.job_images, warmup_s=cfg.warmup_s,
            idle_s=cfg.duration_s, min_ok=cfg.min_ok, max_s=cfg.max_window_s, server_pids=[server.pid]))
    job, ratios = measured["job"], measured["ratios"]
    ctx.info["jobs-contention"] = {
        "cold_start_s": server.cold_start_s, "live_clients": cfg.job_clients, "job_images": job["images"],
        "job_seconds": job["seconds"], "job_images_per_s": job["images_per_s"], "job_submit_s": job["submit_s"],
        "job_failed": job["failed"], "result_mismatches": job["mismatches"], "p50_ratio": ratios["p50"],
        "p95_ratio": ratios["p95"]}
    rows = []
    for variant, key in (("idle", "idle"), (f"during {job['images']}-image job", "during")):
        rows.append(ctx.row("jobs-contention", cfg.job_clients, measured[key], variant=variant, mean_batch=None,
                            peak_rss_mb=mon.peak_rss_mb))
        ctx.advance(f"jobs-contention {key}")
    rows[-1].update(job=job, ratios=ratios, timeline=measured["timeline"])
    return rows


SCENARIOS: dict[str, Callable[[Context], list[dict]]] = {
    "inprocess": inprocess,
    "service-embedded": service_embedded,
    "service-triton-grpc": service_triton_grpc,
    "service-triton-http": service_triton_http,
    "triton-pipeline-grpc": triton_pipeline_grpc,
    "triton-pipeline-http": triton_pipeline_http,
    "triton-heads": triton_heads,
    "seed-baseline": seed_baseline,
    "detectors": detectors,
    "batch-cost": batch_cost,
    "cluster": cluster,
    "container": container,
    "identity": identity,
    "jobs-contention": jobs_contention,
}
# Run only when named (`--scenarios cluster`): each starts a whole deployment per instance count; `container`
# needs `make image`'s image (root, podman).
OPT_IN = {"cluster", "container"}


def unusable(rows: list[dict]) -> str | None:
    """Why a scenario that returned rows still failed: a measured run in which no request succeeded."""
    empty = [r for r in rows if r["requests"] - r["errors"] <= 0]
    if not empty:
        return None
    return "; ".join(
        f"no request succeeded at c={r['concurrency']}{' ' + r['variant'] if r['variant'] else ''} "
        f"({r['requests']} completed, {r['errors']} failed in a {r['duration_s']} s window"
        + (f"; first error: {r['first_error']}" if r.get("first_error") else "") + ")" for r in empty)


def runs_in(name: str, cfg: Config) -> int:
    """How many measured runs a scenario makes (for the progress bar)."""
    if name == "service-embedded":
        return len(cfg.concurrencies) + 2 * len(seed_comparison_concurrencies(cfg))
    if name == "triton-heads":
        return 2 * len(cfg.heads) * len(cfg.head_concurrencies)
    if name == "detectors":
        return 4  # auto, faceboxes, blazeface, haar
    if name == "batch-cost":
        return 1
    if name == "cluster":
        return len(CLUSTER_INSTANCES) * len(cfg.concurrencies)
    if name == "identity":
        return 3 + len(_search_galleries(cfg))
    if name == "jobs-contention":
        return 2
    return len(cfg.concurrencies)
