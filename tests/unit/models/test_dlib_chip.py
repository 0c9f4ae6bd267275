"""The `dlib` alignment template (`crop.template = "dlib"`): our five landmarks put where dlib's face chip has them."""

from __future__ import annotations

import numpy as np
import pytest

from faceserve.models import crops
from faceserve.models.spec import CropRecipe, ModelSpec

# dlib's five-point chip template (get_face_chip_details): one eye's outer and inner corner, the other's, the nose's
# base, at padding 0 (image order of the eyes: the second pair is on the image's left)
DLIB_FIVE_POINT = np.array([[0.8595674595992, 0.2134981538014], [0.6460604764104, 0.2289674387677],
                            [0.1205750620789, 0.2137274526848], [0.3340850613712, 0.2290642403242],
                            [0.4901123135679, 0.6277975316475]])


def chip_spec(**crop) -> ModelSpec:
    return ModelSpec(name="embedding_dlib", task="embedding", decoder="embedding", input_name="input", height=150,
                     width=150, channels=3, output_names=("descriptor",), output_dims=((128,),), colour="rgb",
                     scale=1 / 256, offset=0.0, crop=CropRecipe(**crop))


def test_the_eyes_sit_where_dlibs_five_point_chip_puts_them():
    """The template's eye centres (measured) are within two pixels of the means of dlib's five-point eye corners in a
    150 px chip at padding 0.25, its nose between the eyes and above dlib's nose base; ArcFace's are far off."""
    five_point_eyes = np.stack([DLIB_FIVE_POINT[2:4].mean(axis=0), DLIB_FIVE_POINT[0:2].mean(axis=0)])
    to_chip = lambda points: (0.25 + points) / 1.5 * 150  # dlib's padding
    assert np.abs(to_chip(crops.DLIB_CHIP_TEMPLATE[:2]) - to_chip(five_point_eyes)).max() < 2.0
    assert np.abs(to_chip(crops.ALIGNMENT_TEMPLATE[:2]) - to_chip(five_point_eyes)).max() > 10
    nose = crops.DLIB_CHIP_TEMPLATE[2]
    assert five_point_eyes[0, 0] < nose[0] < five_point_eyes[1, 0] and nose[1] < DLIB_FIVE_POINT[4, 1]


def test_a_face_on_the_template_comes_out_as_dlibs_chip():
    """Landmarks of a photo that are the chip's own, scaled by two and moved: the chip is the photo scaled back,
    the landmarks at (0.25 + t) / 1.5 of the side, as dlib's get_face_chip(image, shape, 150, 0.25) cuts it."""
    spec = chip_spec(align=True, template="dlib", margin=0.25)
    in_chip = (0.25 + crops.DLIB_CHIP_TEMPLATE) / 1.5 * 150
    placed = in_chip * 2 + [40, 30]
    matrix = crops.alignment_transform(placed, spec)
    np.testing.assert_allclose(matrix, [[0.5, 0, -20], [0, 0.5, -15]], atol=1e-3)
    assert not np.allclose(crops.alignment_transform(placed, chip_spec(align=True, margin=0.25)), matrix, atol=1)


def test_a_recipe_naming_an_unknown_template_is_refused_before_any_conversion():
    from convert import recipe

    entry = {"task": "embedding", "decoder": "embedding", "crop": {"align": True, "template": "dlib68"}}
    with pytest.raises(recipe.RecipeError, match="crop template 'dlib68' is unknown; give crop.template one of "
                                                 "arcface, dlib"):
        recipe.merge(entry, {}, "embedding_dlib")
    assert recipe.merge({**entry, "crop": {"align": True, "template": "dlib"}}, {}, "e")["crop"]["template"] == "dlib"
