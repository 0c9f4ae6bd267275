"""Real photos from registry packages and the shared fixtures (tests, benchmarks, parity).

Never imported by the service: skimage and matplotlib are test/convert dependencies.
"""

from __future__ import annotations

import numpy as np

from faceserve.dev.fixtures import FIXTURES

FIXTURE_IMAGES = FIXTURES / "images"


def astronaut() -> np.ndarray:
    from skimage import data
    return data.astronaut()


def camera() -> np.ndarray:
    """skimage's camera man: one face, small and side-lit."""
    from skimage import data
    return _rgb(data.camera())


def grace_hopper() -> np.ndarray:
    import matplotlib.cbook
    from PIL import Image
    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        return np.asarray(Image.open(handle).convert("RGB"))


def no_face_photos() -> dict[str, np.ndarray]:
    from skimage import data
    return {name: _rgb(getattr(data, name)()) for name in ("chelsea", "coffee", "rocket")}


def load_rgb(path) -> np.ndarray:
    from PIL import Image
    return np.asarray(Image.open(path).convert("RGB"))


def fixture(name: str) -> np.ndarray | None:
    """An RGB fixture photo, or None when ../shared/fixtures is absent."""
    path = FIXTURE_IMAGES / name
    return load_rgb(path) if path.exists() else None


def face_photos() -> dict[str, np.ndarray]:
    """Every real photo with faces available on this machine."""
    photos = {"astronaut": astronaut(), "grace_hopper": grace_hopper()}
    for name in ("emotion_classification.jpg", "solvay_conference.jpg"):
        image = fixture(name)
        if image is not None:
            photos[name.split(".")[0]] = image
    return photos


def _rgb(image: np.ndarray) -> np.ndarray:
    return np.repeat(image[:, :, None], 3, axis=2) if image.ndim == 2 else image[:, :, :3]
