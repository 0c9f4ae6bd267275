"""Where the shared fixtures are: the models `convert` takes from them, and the photos and labelled sets of the
tests and benchmarks (../shared/fixtures beside a checkout, or FACESERVE_FIXTURES; absent on many machines)."""

from __future__ import annotations

import os
from pathlib import Path

from faceserve.settings import PROJECT_ROOT

FIXTURES = Path(os.environ.get("FACESERVE_FIXTURES", PROJECT_ROOT.parent / "shared" / "fixtures"))

# The identity set's probe photos (the fixtures README's table): who the faces highest in each photo are, left to
# right; every other face (obama_and_biden.jpg's third person at the bottom edge) is nobody enrolled.
IDENTITY_PROBES = {
    "alex_lacamoire1.jpg": ["alex_lacamoire"],
    "johnsnow_test1.jpg": ["kit_harington"],
    "kit_with_rose.jpg": ["rose_leslie", "kit_harington"],
    "obama1.jpg": ["obama"],
    "obama3.jpg": ["obama"],
    "obama_and_biden.jpg": ["biden", "obama"],
    "lin-manuel-miranda.png": [None],
}
# Those of one face, by person; lin-manuel-miranda is enrolled nowhere.
SINGLE_FACE_PROBES = {"alex_lacamoire1.jpg": "alex_lacamoire", "johnsnow_test1.jpg": "kit_harington",
                      "obama1.jpg": "obama", "obama3.jpg": "obama", "lin-manuel-miranda.png": "lin_manuel_miranda"}
