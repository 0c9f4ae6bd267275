"""Where the shared fixtures are: the models `convert` takes from them, and the photos and labelled sets of the
tests and benchmarks (../shared/fixtures beside a checkout, or FACESERVE_FIXTURES; absent on many machines)."""

from __future__ import annotations

import os
from pathlib import Path

from faceserve.settings import PROJECT_ROOT

FIXTURES = Path(os.environ.get("FACESERVE_FIXTURES", PROJECT_ROOT.parent / "shared" / "fixtures"))
