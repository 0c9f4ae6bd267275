"""Each model's recipe applied to pixels: crop margins and padding, colour order, scaling, stretching."""

from __future__ import annotations

import numpy as np
import pytest

from faceserve.models import crops
from faceserve.models.spec import CropRecipe, ModelSpec


def _spec(**kwargs) -> ModelSpec:
    base = dict(name="m", task="age", decoder="regression", input_name="input", height=8, width=8, channels=3,
                output_names=("age",), output_dims=((1,),), max_batch_size=8, colour="bgr", scale=1.0, offset=0.0)
    return ModelSpec(**{**base, **kwargs})


def test_crop_margin_padding_and_clipping():
    spec = _spec(crop=CropRecipe(margin=0.4))
    assert crops.crop_box((100, 100, 200, 150), spec, (1000, 1000)) == (60, 80, 240, 170)
    assert crops.crop_box((10, 10, 110, 60), spec, (100, 100)) == (0, 0, 100, 80)
    padded = _spec(crop=CropRecipe(pad_px=(30, 60)))
    assert crops.crop_box((100, 100, 200, 150), padded, (1000, 1000)) == (70, 40, 230, 210)


def test_recipes_colour_and_scaling():
    image = np.zeros((20, 20, 3), np.uint8)
    image[..., 0] = 200  # pure red
    bgr = crops.face_batch(image, [(0, 0, 20, 20)], _spec())
    assert bgr.shape == (1, 8, 8, 3) and np.allclose(bgr[0, 0, 0], [0, 0, 200])
    gray = crops.face_batch(image, [(0, 0, 20, 20)],
                                 _spec(channels=1, colour="gray", scale=2 / 255, offset=-1.0))
    assert gray.shape == (1, 8, 8, 1) and np.allclose(gray, 2 * round(0.299 * 200) / 255 - 1, atol=1e-2)
    image[5:, :, :] = 50
    stretched = crops.face_batch(image, [(0, 0, 20, 20)], _spec(crop=CropRecipe(stretch=True)))
    assert stretched.min() == 0 and stretched.max() == pytest.approx(255)
