"""The named scenarios (`SCENARIOS`), and those through the service: each takes the run's Context and returns
result rows, or raises Skip(reason). The in-process ones are in `local_scenarios`, the Triton ones in
`triton_scenarios`; what they all measure with is in `sweeps`."""

from __future__ import annotations

import asyncio
import types
from typing import Callable

import httpx
import numpy as np

from benchmarks import contention, loadgen, peer, servers
from benchmarks.local_scenarios import auto_passes, batch_cost, detectors, inprocess
from benchmarks.monitor import TreeMonitor
from benchmarks.report import COMPARISON_C, SEED_DEFAULT_DETECTOR
from benchmarks.sweeps import Config, Context, Skip, locust_sweep, triton_pids
from benchmarks.triton_scenarios import (service_triton_grpc, service_triton_http, triton_heads, triton_pipeline_grpc,
                                         triton_pipeline_http)
from faceserve.dev import devserver
from faceserve.models.detectors import DEFAULT_DETECTOR


def seed_comparison_concurrencies(cfg: Config) -> list[int]:
    """Where service-embedded also runs with Haar, the seed's detector: the targets' comparison point."""
    return [COMPARISON_C] if COMPARISON_C in cfg.concurrencies else [max(cfg.concurrencies)]


def service_embedded(ctx: Context) -> list[dict]:
    """`bentoml serve` with the embedded onnxruntime backend (and its in-process dynamic batcher)."""
    with devserver.bentoml_serve(ctx.out / "logs") as server:
        ctx.info["service-embedded"] = {"cold_start_s": server.cold_start_s}
        rows = [row for _ in ctx.each_workload() for row in locust_sweep(ctx, "service-embedded", server)]
        ctx.workload = (ctx.swept or (ctx.workload,))[0]
        # On the first workload only: the default (auto) against BlazeFace alone, the cheapest detector: what
        # finding small faces costs.
        comparison = seed_comparison_concurrencies(ctx.config)
        rows += locust_sweep(ctx, "service-embedded", server, variant="detector=blazeface",
                              concurrencies=comparison, form={"detector": "blazeface"})
        # With the seed's own detector: the like-for-like point beside the seed's Haar rows. Haar's scan is most of
        # both sides' CPU and it misses 9 of these 12 faces, so the seed comparison that measures serving is against
        # seed-baseline's variant that finds the default detector's faces (`report.seed_section`).
        return rows + locust_sweep(ctx, "service-embedded", server, variant="detector=haar",
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
        return locust_sweep(ctx, "container", server)


def seed_baseline(ctx: Context) -> list[dict]:
    """The seeds' design: Flask + gunicorn (gthread), Keras/TF `predict` per face, original artifacts, detecting with
    Haar as the seeds did; and at the comparison point detecting with the service's default detector instead
    (synchronously, unbatched: benchmarks/seed_boxes.py), so that beside the service the serving design alone
    differs, not the detector, its cost or the faces the heads run on."""
    try:
        import flask  # noqa: F401
        import tensorflow  # noqa: F401
    except ImportError as exc:
        raise Skip(f"the seed baseline needs flask and tensorflow ({exc})") from None
    cfg = ctx.config
    with servers.seed_gunicorn(ctx.out / "logs", cfg.seed_workers, cfg.seed_threads) as server:
        ctx.info["seed-baseline"] = {"cold_start_s": server.cold_start_s,
                                     "gunicorn": f"{cfg.seed_workers} gthread workers x {cfg.seed_threads} threads"}
        rows = locust_sweep(ctx, "seed-baseline", server)
        return rows + locust_sweep(ctx, "seed-baseline", server, variant=SEED_DEFAULT_DETECTOR,
                                   concurrencies=seed_comparison_concurrencies(cfg),
                                   form={"detector": DEFAULT_DETECTOR})


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
                pids = [i.server.pid for i in deployment.instances] + triton_pids(deployment.triton)
                rows += locust_sweep(ctx, "cluster", entry, pids, deployment.triton.metrics_url,
                                      variant=f"instances={instances}")
        except NginxError as exc:  # nginx missing or refusing its configuration: a line in the report
            raise Skip(str(exc)) from None
    return rows


# Synthetic galleries for search speed: one face of the serving embedding model's dimension per identity.
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
            rows.append(_identity_row(ctx, server, path, c, path.strip("/")))
    # The workload repeats its photos, so the embedding cache answers most of the faces above: identify again with
    # none, against a gallery enrolled the same way, for what a new photo costs.
    with tempfile.TemporaryDirectory(prefix="faceserve-bench-gallery-") as data, \
            devserver.bentoml_serve(ctx.out / "logs", {"FACESERVE_DATA_DIR": data,
                                                       "FACESERVE_EMBEDDING_CACHE": "0"}) as server:
        asyncio.run(_enrolments(ctx, server.url, 4))
        rows.append(_identity_row(ctx, server, "/identify", c, "identify, no embedding cache"))
    return rows + _search_rows(ctx)


def _identity_row(ctx: Context, server, path: str, c: int, variant: str) -> dict:
    cfg = ctx.config
    with TreeMonitor([server.pid]) as mon:
        result = loadgen.run_locust(server.url, ctx.images, c, cfg.warmup_s, cfg.duration_s, ctx.out / "locust",
                                    path=path, label=f"identity-{variant.replace(' ', '-').replace(',', '')}-c{c}",
                                    min_ok=cfg.min_ok, max_s=cfg.max_window_s, server_pids=[server.pid])
    ctx.advance(f"identity {variant} c={c}")
    return ctx.row("identity", c, result, variant=variant, mean_batch=None, peak_rss_mb=mon.peak_rss_mb)


def _enrolment_photos(ctx: Context) -> list:
    """What people enrol: the identity set's enrolment photos (one sharp, frontal face each) where the fixtures are
    there, else the workload's photos. The workload's astronaut frames are upscaled and soft (sharpness 90-98):
    enrolment refuses them under its bar of 100 (docs/identity.md)."""
    from benchmarks.similarity import IDENTITY_SET

    enrolment = sorted(photo for photo in (IDENTITY_SET / "enroll").glob("*/*") if photo.suffix in (".jpg", ".jpeg"))
    return enrolment or ctx.images


async def _enrolments(ctx: Context, url: str, concurrency: int) -> dict:
    """Closed-loop enrolments: each creates an identity and adds one face from an enrolment photo."""
    enrolment = _enrolment_photos(ctx)
    async with httpx.AsyncClient(base_url=url, timeout=60) as client:
        async def enrol(i: int) -> None:
            created = (await client.post("/identities/create", json={"name": f"bench-{i}"})).raise_for_status()
            photo = enrolment[i % len(enrolment)]
            (await client.post("/identities/add_faces", data={"identity_id": created.json()["id"]},
                               files={"images": (photo.name, photo.read_bytes(), "image/jpeg")})).raise_for_status()
        return await loadgen.closed_loop(enrol, concurrency, **ctx.window())


def _search_rows(ctx: Context) -> list[dict]:
    from faceserve.gallery.similarity import SimilarityIndex

    from faceserve.models.heads import head_for
    from faceserve.models.repository import Repository
    from faceserve.settings import Settings

    settings = Settings.from_env()
    rows, rng = [], np.random.default_rng(0)
    dimension = head_for(Repository.load(settings.repository, settings.embedding_model).embedding).dimension
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
    "auto-passes": auto_passes,
    "batch-cost": batch_cost,
    "cluster": cluster,
    "container": container,
    "identity": identity,
    "jobs-contention": jobs_contention,
    "peer": peer.peer,
}
# Run only when named (`--scenarios cluster`): each starts a whole deployment per instance count; `container`
# needs `make image`'s image (root, podman); `peer` installs face_recognition from PyPI on its first run.
OPT_IN = {"cluster", "container", "peer"}


def unusable(rows: list[dict]) -> str | None:
    """Why a scenario that returned rows still failed: a measured run in which no request succeeded."""
    empty = [r for r in rows if r["requests"] - r["errors"] <= 0]
    if not empty:
        return None
    return "; ".join(
        f"no request succeeded at c={r['concurrency']}{' ' + r['variant'] if r['variant'] else ''} "
        f"({r['requests']} completed, {r['errors']} failed in a {r['duration_s']} s window"
        + (f"; first error: {r['first_error']}" if r.get("first_error") else "") + ")" for r in empty)


def runs_in(name: str, cfg: Config, swept: tuple[str, ...] = ("single",)) -> int:
    """How many measured runs a scenario makes (for the progress bar), sweeping the `swept` workloads."""
    if name == "service-embedded":
        return len(swept) * len(cfg.concurrencies) + 2 * len(seed_comparison_concurrencies(cfg))
    if name == "seed-baseline":
        return len(cfg.concurrencies) + len(seed_comparison_concurrencies(cfg))
    if name == "inprocess":
        return len(swept) * len(cfg.concurrencies)
    if name == "auto-passes":
        return 1
    if name == "triton-heads":
        return 2 * len(cfg.heads) * len(cfg.head_concurrencies)
    if name == "detectors":
        return 12  # auto, faceboxes, blazeface, blazeface_full, haar and auto's seven unserved variants
    if name == "batch-cost":
        return 1
    if name == "cluster":
        return len(CLUSTER_INSTANCES) * len(cfg.concurrencies)
    if name == "identity":
        return 3 + len(_search_galleries(cfg))
    if name == "jobs-contention":
        return 2
    if name == "peer":
        return peer.runs(cfg)
    return len(cfg.concurrencies)
