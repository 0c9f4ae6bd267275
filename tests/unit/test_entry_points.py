"""Every entry point answers `--help` with no configuration and no server (issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.support import ROOT

ENTRY_POINTS = {"faceserve": "usage: faceserve", "faceserve.bot": "TELEGRAM_BOT_TOKEN",
                "faceserve.dev.cluster": "--instances", "faceserve.dev.triton_local": "{serve,build}",
                "faceserve.dev.postgres_local": "--port", "faceserve.dev.kustomize": "directory",
                "convert": "promote", "benchmarks": "--scenarios", "benchmarks.swap": "--backends"}


@pytest.mark.parametrize("module,says", ENTRY_POINTS.items(), ids=list(ENTRY_POINTS))
def test_help_needs_no_configuration(module, says, tmp_path):
    env = {name: value for name, value in os.environ.items()
           if not name.startswith(("FACESERVE_", "TELEGRAM_"))}
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, env={**env, "HOME": str(tmp_path)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage:") and says in done.stdout, done.stdout
