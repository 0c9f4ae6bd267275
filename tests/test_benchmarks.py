"""`python -m benchmarks --quick` end to end: the report is well-formed and every scenario that ran
produced throughput with zero errors. Triton must run when the local launcher is importable."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ["inprocess", "service-embedded", "service-triton-grpc", "service-triton-http", "triton-heads",
             "seed-baseline", "detectors", "batch-cost"]
ROW_KEYS = {"scenario", "variant", "workload", "concurrency", "throughput", "p50_ms", "p95_ms", "p99_ms",
            "requests", "errors", "mean_batch", "peak_rss_mb", "cpu_percent"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out.joinpath("elapsed.txt").write_text(f"{time.monotonic() - started:.1f}")
    return out


def test_report_is_well_formed(quick_report):
    report = json.loads((quick_report / "results.json").read_text())
    assert {"meta", "scenarios", "rows", "targets"} <= report.keys()
    assert report["meta"]["quick"] is True
    assert set(report["scenarios"]) == set(SCENARIOS)
    for row in report["rows"]:
        assert ROW_KEYS <= row.keys(), row
    markdown = (quick_report / "report.md").read_text()
    table = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| scenario")
             and not line.startswith("| target") and not line.startswith("| image")]
    for row in report["rows"]:
        assert any(line.startswith(f"| {row['scenario']} | {row['variant']} | {row['workload']} | "
                                   f"{row['concurrency']} |") for line in table), row
    for target in report["targets"]:
        assert target["verdict"] in {"PASS", "MISS", "N/A"}
        assert f"**{target['verdict']}**" in markdown
    for png in ("throughput.png", "p99.png"):
        data = (quick_report / png).read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 5000


def test_every_scenario_ran_with_throughput_and_no_errors(quick_report):
    report = json.loads((quick_report / "results.json").read_text())
    triton_expected = importlib.util.find_spec("faceserve.triton_local") is not None
    for name, scenario in report["scenarios"].items():
        if scenario["status"] == "skipped":
            assert scenario["reason"], name
            assert not (triton_expected and ("triton" in name)), f"{name} skipped: {scenario['reason']}"
            continue
        assert scenario["status"] == "ran", f"{name}: {scenario.get('reason')}"
        rows = [r for r in report["rows"] if r["scenario"] == name]
        assert rows, name
        for row in rows:
            assert row["throughput"] > 0 and row["requests"] > 0, row
            assert row["errors"] == 0, row
    heads = [r for r in report["rows"] if r["scenario"] == "triton-heads"]
    if heads:
        assert {r["variant"].split("/")[1] for r in heads} == {"batching-on", "batching-off"}
        assert all(r["mean_batch"] >= 1 for r in heads)
        off = [r for r in heads if r["variant"].endswith("off")]
        assert all(r["mean_batch"] == 1 for r in off)  # batching off really means one request per execution


def test_quick_mode_is_quick(quick_report):
    assert float((quick_report / "elapsed.txt").read_text()) < 120
