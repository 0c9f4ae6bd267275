"""What every scenario is given and measures with: the run's `Config` and `Context`, `Skip`, the closed-loop and
Locust sweeps, and Triton's batch counters."""

from __future__ import annotations

import contextlib
import dataclasses
import re
import time
from pathlib import Path
from typing import Callable

import httpx
import psutil

from benchmarks import loadgen
from benchmarks.monitor import CpuWindow, TreeMonitor
from benchmarks.workload import Workload
from faceserve.dev import devserver


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
    peer_embeddings: tuple[str, ...] = ()  # peer: the repository's embedding models measured; none: the served one


@dataclasses.dataclass
class Context:
    config: Config
    workloads: dict[str, Workload]
    workload: str  # the one the load scenarios sweep now (`each_workload`)
    out: Path
    advance: Callable[[str], None]  # progress: one call per measured run
    swept: tuple[str, ...] = ()  # every workload the load scenarios sweep, in turn; none: `workload` alone
    stack: contextlib.ExitStack = dataclasses.field(default_factory=contextlib.ExitStack)
    info: dict = dataclasses.field(default_factory=dict)  # per scenario: cold start, notes
    _tritons: dict = dataclasses.field(default_factory=dict)

    @property
    def images(self) -> list[Path]:
        return self.workloads[self.workload].files

    def each_workload(self):
        """Each swept workload's name in turn, `workload` (hence `images` and each row's workload) set to it."""
        for name in self.swept or (self.workload,):
            self.workload = name
            yield name

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


def triton_pids(server) -> list[int]:
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


def locust_sweep(ctx: Context, scenario: str, server, extra_pids=(), metrics_url: str | None = None,
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


async def measured_loop(ctx: Context, call, concurrency: int, pids: list[int],
                        duration_s: float | None = None) -> tuple[dict, dict]:
    """`loadgen.closed_loop` over `call` at `concurrency` in the run's window, with the CPU and the peak RSS of
    `pids` (none given: neither is measured)."""
    with TreeMonitor(pids) if pids else contextlib.nullcontext() as mon:
        result = await loadgen.closed_loop(call, concurrency, **ctx.window(duration_s),
                                           cpu=CpuWindow(pids) if pids else None)
    return result, mon.peak_rss_mb if mon else {}
