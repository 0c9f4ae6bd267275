"""results.json, and report.md: a Markdown table with the target verdicts (the PNG plots are drawn by `plots`)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import peer, plots
from faceserve.models.detectors import DEFAULT_DETECTOR

SERVICES = ("service-embedded", "service-triton-grpc", "service-triton-http")
COLUMNS = ("scenario", "variant", "workload", "c", "req/s", "p50 ms", "p95 ms", "p99 ms", "errors",
           "mean batch", "peak RSS MB per process", "CPU %", "server CPU ms/req")
COMPARISON_C = 16  # the concurrency at which the service is compared with in-process and with the seed
HAAR = "detector=haar"  # service-embedded's variant with the seed's detector
SEED_DEFAULT_DETECTOR = f"detector={DEFAULT_DETECTOR}"  # seed-baseline's variant finding the service's faces


def _find(rows, scenario, c, variant=""):
    return next((r for r in rows if r["scenario"] == scenario and r["concurrency"] == c
                 and r["variant"] == variant), None)


def _name(row: dict) -> str:
    return f"{row['scenario']}{' ' + row['variant'] if row['variant'] else ''} c={row['concurrency']}"


def _target(name, value, ok, detail, rows=()):
    """A verdict on `value`; a number measured with errors in any of `rows` is never a PASS."""
    failing = [r for r in rows if r and r.get("errors")]
    if value is None:
        verdict = "N/A"
    elif failing:
        verdict = "MISS"
        detail = "errors in " + ", ".join(f"{_name(r)} ({r['errors']}, first: {r.get('first_error')})"
                                          for r in failing) + "; " + detail
    else:
        verdict = "PASS" if ok else "MISS"
    return {"target": name, "value": value, "verdict": verdict, "detail": detail}


def _at_most(a, b) -> bool:
    return a is not None and b is not None and a <= b


def targets(rows: list[dict], info: dict) -> list[dict]:
    out, c = [], COMPARISON_C
    emb, inp = _find(rows, "service-embedded", c), _find(rows, "inprocess", c)
    ratio = round(emb["throughput"] / inp["throughput"], 2) if emb and inp and inp["throughput"] else None
    out.append(_target(f"service-embedded / inprocess throughput at c={c} >= 0.8", ratio,
                       ratio is not None and ratio >= 0.8,
                       f"{emb['throughput']} vs {inp['throughput']} req/s" if ratio is not None else "not measured",
                       [emb, inp]))

    name = (f"service-embedded / seed-baseline throughput at c={c}, both finding the default detector's faces: "
            ">= 10x, p99 not worse")
    service, seed = _find(rows, "service-embedded", c), _find(rows, "seed-baseline", c, SEED_DEFAULT_DETECTOR)
    ratio = ratio_of(service and service["throughput"], seed and seed["throughput"])
    out.append(_target(name, ratio, ratio is not None and ratio >= 10 and _at_most(service["p99_ms"], seed["p99_ms"]),
                       f"service-embedded {service['throughput']} req/s p99 {service['p99_ms']} ms vs seed "
                       f"{SEED_DEFAULT_DETECTOR} {seed['throughput']} req/s p99 {seed['p99_ms']} ms"
                       if ratio is not None else "not measured", [service, seed]))

    name = f"service-embedded at c={c}, default detector (auto) / detector=blazeface throughput >= 0.6"
    auto, blaze = _find(rows, "service-embedded", c), _find(rows, "service-embedded", c, "detector=blazeface")
    if auto and blaze and blaze["throughput"] and auto["workload"] == "single":
        ratio = round(auto["throughput"] / blaze["throughput"], 2)
        out.append(_target(name, ratio, ratio >= 0.6, f"{auto['throughput']} vs {blaze['throughput']} req/s, "
                           f"server CPU {_fmt(_cpu_ms(auto), 2)} vs "
                           f"{_fmt(_cpu_ms(blaze), 2)} ms per request", [auto, blaze]))
    else:
        out.append(_target(name, None, False, "not measured (needs the single workload)"))

    analyze, identify = (next((r for r in rows if r["scenario"] == "identity" and r["variant"] == variant), None)
                         for variant in ("analyze", "identify, no embedding cache"))
    ratio = ratio_of(identify and identify["throughput"], analyze and analyze["throughput"])
    out.append(_target("identity: /identify (no embedding cache) / /analyze throughput at c=16 >= 0.7", ratio,
                       ratio is not None and ratio >= 0.7,
                       f"{identify['throughput']} vs {analyze['throughput']} req/s, server CPU "
                       f"{_fmt(_cpu_ms(identify), 2)} vs {_fmt(_cpu_ms(analyze), 2)} ms per request"
                       if ratio is not None else "not measured", [identify, analyze]))

    heads = sorted({r["variant"].split("/")[0] for r in rows if r["scenario"] == "triton-heads"})
    for head in heads or ["(heads)"]:
        on, off = (_find(rows, "triton-heads", 32, f"{head}/batching-{s}") for s in ("on", "off"))
        ratio = round(on["throughput"] / off["throughput"], 2) if on and off and off["throughput"] else None
        out.append(_target(f"triton-heads {head}: batching on / off at c=32 >= 2x, mean batch >= 8", ratio,
                           ratio is not None and ratio >= 2 and (on["mean_batch"] or 0) >= 8,
                           f"{on['throughput']} vs {off['throughput']} req/s, mean batch {on['mean_batch']}"
                           if ratio is not None else "not measured", [on, off]))

    at_c = [r for s in SERVICES if (r := _find(rows, s, c)) and r["workload"] == "single"]
    best = max(at_c, key=lambda r: r["throughput"]) if at_c else None
    out.append(_target(f"single-face 640x480 over HTTP: >= 150 img/s at c={c} with p99 <= 250 ms",
                       best and best["throughput"], best is not None and best["throughput"] >= 150
                       and _at_most(best["p99_ms"], 250),
                       f"{best['scenario']}: {best['throughput']} req/s, p99 {best['p99_ms']} ms" if best
                       else "not measured", at_c))
    c1 = [r for s in SERVICES if (r := _find(rows, s, 1)) and r["workload"] == "single" and r["p50_ms"] is not None]
    best1 = min(c1, key=lambda r: r["p50_ms"]) if c1 else None
    out.append(_target("single-face 640x480 over HTTP: p50 <= 15 ms at c=1", best1 and best1["p50_ms"],
                       best1 is not None and best1["p50_ms"] <= 15,
                       f"{best1['scenario']}: p50 {best1['p50_ms']} ms" if best1 else "not measured", c1))

    out += job_targets(rows)

    cold = info.get("service-embedded", {}).get("cold_start_s")
    out.append(_target("cold start to /readyz <= 5 s (service-embedded)", cold, cold is not None and cold <= 5,
                       f"{cold} s from `bentoml serve` to the first 200 on /readyz" if cold else "not measured"))
    embedded = [r for r in rows if r["scenario"] == "service-embedded"]
    rss = [v for r in embedded for v in r.get("peak_rss_mb", {}).values()]
    peak = max(rss) if rss else None
    out.append(_target("RSS <= 600 MB per worker (service-embedded)", peak, peak is not None and peak <= 600,
                       f"largest process of the bentoml tree peaked at {peak} MB" if peak else "not measured",
                       embedded))
    return out


JOBS = "jobs-contention"
JOB_LATENCY_FACTOR = 2.0  # issue 14: a live analyze within 2x of the idle service's latency while a job runs


def _job_rows(rows: list[dict]) -> tuple[dict | None, dict | None]:
    """jobs-contention's idle row and its during-the-job row (the one that carries the job)."""
    found = [r for r in rows if r["scenario"] == JOBS]
    return (next((r for r in found if r["variant"] == "idle"), None),
            next((r for r in found if "job" in r), None))


def job_targets(rows: list[dict]) -> list[dict]:
    idle, during = _job_rows(rows)
    name = (f"jobs-contention: live /analyze p50 and p95 while a job runs <= {JOB_LATENCY_FACTOR:g}x the idle "
            "service's")
    if not (idle and during):
        return [_target(name, None, False, "not measured"),
                _target("jobs-contention: every job line equals a synchronous /analyze", None, False, "not measured")]
    ratios, job = during["ratios"], during["job"]
    worst = max((v for v in (ratios["p50"], ratios["p95"]) if v is not None), default=None)
    detail = (f"c={during['concurrency']}, {job['images']}-image job: p50 {idle['p50_ms']} -> {during['p50_ms']} ms "
              f"({ratios['p50']}x), p95 {idle['p95_ms']} -> {during['p95_ms']} ms ({ratios['p95']}x); "
              f"the job ran {job['seconds']} s, {job['images_per_s']} images/s")
    return [_target(name, worst, worst is not None and worst <= JOB_LATENCY_FACTOR, detail, [idle, during]),
            _target("jobs-contention: every job line equals a synchronous /analyze", job["mismatches"],
                    job["mismatches"] == 0 and job["result_lines"] == job["images"] and job["names_in_order"],
                    f"{job['mismatches']} of {job['result_lines']} lines differ ({job['mismatches_seen']} in a face, "
                    f"a box or a label; {job['failed_lines']} failed); names in submission order: "
                    f"{job['names_in_order']}")]


def job_section(rows: list[dict]) -> list[str]:
    idle, during = _job_rows(rows)
    if not (idle and during):
        return []
    job, ratios = during["job"], during["ratios"]
    lines = ["", f"## Live /analyze beside a {job['images']}-image job (`jobs-contention`)", "",
             f"{during['concurrency']} closed-loop clients on `/analyze` throughout; the job is the workload's photos "
             f"repeated, one {job['archive_mb']} MB zip to `/jobs/submit` (its upload, {job['submit_s']} s, is in "
             "neither window).", "",
             "| window | live requests | live req/s | p50 ms | p95 ms | p99 ms | errors "
             "| server CPU % (job's included) |",
             "|---|---|---|---|---|---|---|---|"]
    for label, r, cpu in (("idle", idle, idle.get("cpu_percent")), ("during the job", during,
                                                                     job.get("server_cpu_percent"))):
        lines.append(f"| {label} | {r['requests']} | {_fmt(r['throughput'])} | {_fmt(r['p50_ms'])} | "
                     f"{_fmt(r['p95_ms'])} | {_fmt(r['p99_ms'])} | {r['errors']} | {_fmt(cpu, 0)} |")
    lines += [f"| during / idle | | {_fmt(ratio_of(during['throughput'], idle['throughput']), 2)} | "
              f"{_fmt(ratios['p50'], 2)} | {_fmt(ratios['p95'], 2)} | {_fmt(ratios['p99'], 2)} | | |", "",
              f"The job: {job['done']} done, {job['failed']} failed of {job['images']} in {job['seconds']} s "
              f"(created to finished, the server's clock): **{job['images_per_s']} images/s**. Its result lines "
              f"against a synchronous `/analyze` of each photo: **{job['mismatches']} mismatches** "
              f"({job['mismatches_seen']} in a face, a box or a label). Plot: `jobs-contention.png`."]
    return lines


def auto_pass_section(rows: list[dict]) -> list[str]:
    passes = [r for r in rows if r["scenario"] == "auto-passes"]
    if not passes:
        return []
    lines = ["", "## The default detector's fine pass by workload (`auto-passes`: a photo at a time, detection alone)",
             "", "| workload | photos | fine pass ran on | coarse pass ms | fine pass ms (where it ran) | "
                 "fine pass ms per photo | detection ms per photo |", "|---|---|---|---|---|---|---|"]
    for r in passes:
        lines.append(f"| {r['workload']} | {r['images']} | {r['fine_pass_images']} | {_fmt(r['coarse_ms'], 2)} | "
                     f"{_fmt(r['fine_pass_ms_when_run'], 2)} | {_fmt(r['fine_pass_ms_per_image'], 2)} | "
                     f"{_fmt(r['detect_ms'], 2)} |")
    return lines


def ratio_section(rows: list[dict]) -> list[str]:
    """service-embedded ÷ inprocess for every workload and concurrency both ran."""
    pairs = []
    for r in rows:
        if r["scenario"] == "service-embedded" and not r["variant"]:
            limit = next((i for i in rows if i["scenario"] == "inprocess" and i["workload"] == r["workload"]
                          and i["concurrency"] == r["concurrency"]), None)
            if limit:
                pairs.append((r, limit))
    if not pairs:
        return []
    lines = ["", "## service-embedded ÷ inprocess, by workload", "",
             "Where other work loads the machine, the two runs, minutes apart, get different shares of its cores: the "
             "CPU per request is the steadier comparison.", "",
             "| workload | c | service req/s | in-process req/s | ratio | service p99 ms | service CPU ms/req | "
             "in-process CPU ms/req | CPU per request, in-process ÷ service |", "|---|---|---|---|---|---|---|---|---|"]
    for service, limit in pairs:
        lines.append(f"| {service['workload']} | {service['concurrency']} | {_fmt(service['throughput'])} | "
                     f"{_fmt(limit['throughput'])} | {_fmt(ratio_of(service['throughput'], limit['throughput']), 2)} | "
                     f"{_fmt(service['p99_ms'])} | {_fmt(_cpu_ms(service), 2)} | {_fmt(_cpu_ms(limit), 2)} | "
                     f"{_fmt(ratio_of(_cpu_ms(limit), _cpu_ms(service)), 2)} |")
    return lines


# (what is compared, the service's variant, the seed's variant) at COMPARISON_C: benchmarks/README.md says what
# each ratio means.
SEED_COMPARISONS = (("service, default path ÷ seed, Haar", "", ""),
                    ("like for like: both detecting with Haar", HAAR, ""),
                    ("both finding the default detector's faces (serving alone)", "", SEED_DEFAULT_DETECTOR))


def seed_section(rows: list[dict]) -> list[str]:
    """service-embedded ÷ seed-baseline three ways, in throughput and in server CPU per request."""
    c = COMPARISON_C
    pairs = [(what, service, seed) for what, ours, theirs in SEED_COMPARISONS
             if (service := _find(rows, "service-embedded", c, ours))
             and (seed := _find(rows, "seed-baseline", c, theirs))]
    if not pairs:
        return []
    lines = ["", f"## service-embedded ÷ seed-baseline at c={c}", "",
             "| comparison | service | seed | service req/s | seed req/s | throughput ratio | service p99 ms | "
             "seed p99 ms | service CPU ms/req | seed CPU ms/req | CPU per request, seed ÷ service |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for what, service, seed in pairs:
        lines.append(f"| {what} | {service['variant'] or 'default'} | {seed['variant'] or 'Haar'} | "
                     f"{_fmt(service['throughput'])} | {_fmt(seed['throughput'])} | "
                     f"{_fmt(ratio_of(service['throughput'], seed['throughput']), 2)} | {_fmt(service['p99_ms'])} | "
                     f"{_fmt(seed['p99_ms'])} | {_fmt(_cpu_ms(service), 2)} | {_fmt(_cpu_ms(seed), 2)} | "
                     f"{_fmt(ratio_of(_cpu_ms(seed), _cpu_ms(service)), 2)} |")
    return lines


def identity_section(rows: list[dict]) -> list[str]:
    """identify ÷ analyze through the service, side by side in one run: with the embedding cache (the workload
    repeats its photos) and without (what a new photo costs)."""
    analyze = next((r for r in rows if r["scenario"] == "identity" and r["variant"] == "analyze"), None)
    identify = [r for r in rows if r["scenario"] == "identity" and r["variant"].startswith("identify")]
    if analyze is None or not identify:
        return []
    lines = ["", f"## identify ÷ analyze at c={analyze['concurrency']}", "",
             "| identify | req/s | analyze req/s | ratio | p99 ms | CPU ms/req | analyze CPU ms/req |",
             "|---|---|---|---|---|---|---|"]
    for r in identify:
        lines.append(f"| {r['variant']} | {_fmt(r['throughput'])} | {_fmt(analyze['throughput'])} | "
                     f"{_fmt(ratio_of(r['throughput'], analyze['throughput']), 2)} | {_fmt(r['p99_ms'])} | "
                     f"{_fmt(_cpu_ms(r), 2)} | {_fmt(_cpu_ms(analyze), 2)} |")
    return lines


def ratio_of(a, b):
    return round(a / b, 2) if a is not None and b else None


def _fmt(v, digits=1):
    if v is None:
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, float) else str(v)


def _rss(peaks: dict) -> str:
    if not peaks:
        return "–"
    return ", ".join(f"{k.split('#')[0]} {v:.0f}" for k, v in sorted(peaks.items(), key=lambda kv: -kv[1])[:4])


def _cpu_ms(row: dict) -> float | None:
    """CPU time the measured processes spent per successful request in the window (load generators excluded)."""
    if not row.get("cpu_percent") or not row.get("throughput"):
        return None
    return row["cpu_percent"] * 10 / row["throughput"]


def markdown(report: dict) -> str:
    cfg = report["meta"]["config"]
    lines = [f"# faceserve benchmarks — {report['meta']['date']}", "",
             f"Command: `{report['meta']['command']}`  ", f"Machine: {report['meta']['machine']}  ",
             f"Workload swept: `{report['meta']['workload']}` ({report['meta']['workload_files']} JPEGs); "
             f"closed loop; warm-up {cfg['warmup_s']} s excluded, then each point measures at least "
             f"{cfg['duration_s']} s and {cfg.get('min_ok', 1)} successful requests (at most "
             f"{cfg.get('max_window_s', 60)} s); req/s counts successful requests only.", "",
             "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for r in report["rows"]:
        lines.append("| " + " | ".join([
            r["scenario"], r["variant"] or "", r["workload"], str(r["concurrency"]), _fmt(r["throughput"]),
            _fmt(r["p50_ms"]), _fmt(r["p95_ms"]), _fmt(r["p99_ms"]), str(r["errors"]), _fmt(r.get("mean_batch"), 2),
            _rss(r.get("peak_rss_mb", {})), _fmt(r.get("cpu_percent"), 0), _fmt(_cpu_ms(r), 2)]) + " |")
    notes = [f"- {_name(r)}: {r['window_note']}" for r in report["rows"] if r.get("window_note")]
    if notes:
        lines += ["", "Windows cut short:", "", *notes]
    lines += ["", "## Scenarios", ""]
    for name, s in report["scenarios"].items():
        extra = "; ".join(f"{k}: {v}" for k, v in s.get("info", {}).items())
        lines.append(f"- **{name}**: {s['status']}" + (f" — {s['reason']}" if s.get("reason") else "")
                     + (f" ({extra})" if extra else ""))
    for name, value in report.get("servers", {}).items():
        lines.append(f"- {name}: {value}")
    lines += ["", "## Targets", "", "| target | value | verdict | detail |", "|---|---|---|---|"]
    for t in report["targets"]:
        lines.append(f"| {t['target']} | {_fmt(t['value'], 2)} | **{t['verdict']}** | {t['detail']} |")
    det = [r for r in report["rows"] if r["scenario"] == "detectors"]
    if det and "labelled" in det[0]:
        lines += ["", "## Detectors on the labelled set (43 hand-boxed faces, IoU >= 0.4) and ms per image", "",
                  "| detector | faces found | recall | stray boxes | precision | faces in face-less photos | "
                  + " | ".join(f"ms per {w} image" for w in det[0]["ms_by_workload"]) + " |",
                  "|---|---|---|---|---|---|" + "---|" * len(det[0]["ms_by_workload"])]
        for r in det:
            lab = r["labelled"]
            lines.append(f"| {r['variant']} | {lab['found']}/{lab['faces']} | {lab['recall']:.1%} | {lab['stray']} | "
                         f"{lab['precision']:.1%} | {sum(r['faces_in_faceless_photos'].values())} | "
                         + " | ".join(_fmt(v, 2) for v in r["ms_by_workload"].values()) + " |")
    if det and "sets" in det[0]:
        sets = [*det[0]["sets"], "all_sets"]
        lines += ["", "## Detectors on every labelled set (faces found / faces, stray boxes, ms per photo)", "",
                  "Recall and precision at IoU >= 0.4 (the `counted` photos by count). Variants not served are the "
                  "default's measured alternatives.", "",
                  "| detector | served | " + " | ".join(name.replace("_", " ") for name in sets) + " |",
                  "|---|---|" + "---|" * len(sets)]
        for r in det:
            cells = [r["sets"].get(name) or r["all_sets"] for name in sets]
            lines.append(f"| {r['variant']} | {'yes' if r['served'] else 'no'} | " + " | ".join(
                f"{c['found']}/{c['faces']}, {c['stray']} stray, {c['ms_per_image']} ms" for c in cells) + " |")
    if det:
        lines += ["", "## Detectors per image (ms, faces found)", "", "| image | " +
                  " | ".join(r["variant"] for r in det) + " |", "|---|" + "---|" * len(det)]
        for image in det[0]["ms_by_image"]:
            lines.append(f"| {image} | " + " | ".join(
                f"{r['ms_by_image'][image]} ms, {r['faces_by_image'][image]} faces" for r in det) + " |")
    cost = [r for r in report["rows"] if r["scenario"] == "batch-cost"]
    if cost:
        sizes = sorted({int(r["mean_batch"]) for r in cost})
        models = sorted({r["variant"].split("/")[0] for r in cost})
        lines += ["", "## onnxruntime ms per image by batch size (1 thread, model alone)", "",
                  "| model | " + " | ".join(f"batch {n}" for n in sizes) + " |", "|---|" + "---|" * len(sizes)]
        for model in models:
            by_size = {int(r["mean_batch"]): r["ms_per_image"] for r in cost if r["variant"].startswith(model + "/")}
            lines.append(f"| {model} | " + " | ".join(_fmt(by_size.get(n), 3) for n in sizes) + " |")
    lines += auto_pass_section(report["rows"])
    lines += ratio_section(report["rows"])
    lines += seed_section(report["rows"])
    lines += identity_section(report["rows"])
    lines += job_section(report["rows"])
    lines += peer.section(report["rows"])
    drawn = [*(["throughput.png", "p99.png"] if _sweeps(report["rows"]) else []),
             *(["detectors.png"] if det and "sets" in det[0] else []),
             *(["jobs-contention.png"] if all(_job_rows(report["rows"])) else [])]
    lines += ["", "Plots: " + ", ".join(f"`{name}`" for name in drawn) + ".", ""] if drawn else [""]
    return "\n".join(lines)


def _sweeps(rows: list[dict]) -> dict[str, list[dict]]:
    """The rows of the concurrency sweeps, by scenario and variant: what throughput.png and p99.png draw."""
    series: dict[str, list[dict]] = {}
    measured_otherwise = ("detectors", "auto-passes", "batch-cost", "identity", JOBS, peer.SCENARIO)
    for r in rows:
        if r["scenario"] not in measured_otherwise:  # not concurrency sweeps
            series.setdefault(r["scenario"] + (f" {r['variant']}" if r["variant"] else "")
                              + (f" ({r['workload']})" if r["workload"] != "single" else ""), []).append(r)
    return series


def write(report: dict, out: Path) -> None:
    report["targets"] = targets(report["rows"], {k: v.get("info", {}) for k, v in report["scenarios"].items()})
    (out / "results.json").write_text(json.dumps(report, indent=2))
    plots.concurrency_plots(_sweeps(report["rows"]), out)
    plots.detector_plot([r for r in report["rows"] if r["scenario"] == "detectors" and "sets" in r], out)
    plots.job_timeline_plot(*_job_rows(report["rows"]), out)
    peer.draw(report["rows"], out)
    (out / "report.md").write_text(markdown(report))
