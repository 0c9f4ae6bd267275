"""The scenarios on the local Triton server: the service in front of it, faceserve's pipeline model on it with no
service, and each head model on it alone (dynamic batching on and off)."""

from __future__ import annotations

import asyncio

import numpy as np

from benchmarks.sweeps import Context, Skip, locust_sweep, mean_batch, measured_loop, triton_counts, triton_pids
from faceserve.dev import devserver


def _service_triton(ctx: Context, protocol: str) -> list[dict]:
    triton, ports = ctx.triton(dynamic_batching=True)
    address = triton.grpc_url if protocol == "grpc" else triton.http_url
    name = f"service-triton-{protocol}"
    with devserver.bentoml_serve(ctx.out / "logs", {"FACESERVE_BACKEND": f"{protocol}://{address}"}) as server:
        ctx.info[name] = {"cold_start_s": server.cold_start_s}
        return locust_sweep(ctx, name, server, triton_pids(triton), triton.metrics_url)


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
    pids, name, rows = triton_pids(triton), f"triton-pipeline-{protocol}", []
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
            result, peak_rss_mb = await measured_loop(ctx, call, c, pids)
            after = triton_counts(triton.metrics_url)
            rows.append(ctx.row(name, c, result, mean_batch=mean_batch(before, after, heads)[0],
                                batch_by_model=mean_batch(before, after)[1], peak_rss_mb=peak_rss_mb))
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
        pids = triton_pids(triton)
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
                    result, peak_rss_mb = await measured_loop(ctx, call, c, pids, cfg.head_duration_s)
                    batch, _ = mean_batch(before, triton_counts(triton.metrics_url), {head})
                    variant = f"{head}/batching-{'on' if batching else 'off'}"
                    rows.append(ctx.row("triton-heads", c, result, variant=variant, mean_batch=batch,
                                        peak_rss_mb=peak_rss_mb))
                    ctx.advance(f"triton-heads {head} batching={'on' if batching else 'off'} c={c}")
                await client.close()
            asyncio.run(sweep())
    return rows
