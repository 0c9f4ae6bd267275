"""The whole-image classifier of the default repository (nsfwjs' MobileNetV2) on real photos, and the policy
that declines to annotate by its labels."""

from __future__ import annotations

import asyncio
import base64
import dataclasses

import numpy as np
import pytest

from faceserve.dev import photos
from faceserve.pipeline.policy import DeclinePolicy, ImageDeclined
from faceserve.pipeline.schemas import Classification, Label
from faceserve.services import Services
from faceserve.settings import Settings
from tests.support import png

MODEL = "nsfw_mobilenet_v2"
LABELS = ["drawing", "hentai", "neutral", "porn", "sexy"]


def horse_drawing() -> np.ndarray:
    """skimage's horse: a black silhouette on white, the nearest thing to a drawing among the packages' images."""
    from skimage import data
    return np.repeat(np.where(data.horse(), 255, 0).astype(np.uint8)[:, :, None], 3, axis=2)


def classify(runner, image: np.ndarray) -> Classification:
    return runner.run(runner.pipeline.classify(image, None, 5))


def real_photos(fixtures) -> dict[str, np.ndarray]:
    found = photos.face_photos()
    found.update({name: image for name, image in photos.no_face_photos().items() if name != "rocket"})
    return found


def test_default_classifier_and_its_labels(runner):
    spec = runner.pipeline.repository.classifiers[MODEL]
    assert list(spec.labels) == LABELS and spec.input_shape == (224, 224, 3)


def test_real_photos_are_neutral(runner, fixtures):
    photos_seen = real_photos(fixtures)
    assert {"astronaut", "grace_hopper", "emotion_classification", "solvay_conference", "chelsea", "coffee"} <= set(photos_seen)
    for name, image in photos_seen.items():
        answer = classify(runner, image)
        assert answer.model == MODEL and [item.label for item in answer.top_k][0] == "neutral", (name, answer.top_k)
        assert sorted(item.label for item in answer.top_k) == LABELS
        assert sum(item.score for item in answer.top_k) == pytest.approx(1.0, abs=1e-5)


def test_a_drawing_is_a_drawing(runner):
    assert classify(runner, horse_drawing()).top_k[0].label == "drawing"


def test_rocket_is_never_an_explicit_label(runner):
    """skimage's rocket launch photo is the model's own borderline case (drawing 0.51 / neutral 0.49 here; nsfwjs'
    bilinear resize gives drawing 0.81): either way, no explicit label comes near it."""
    top = classify(runner, photos.no_face_photos()["rocket"]).top_k
    assert top[0].label in ("drawing", "neutral") and sum(i.score for i in top if i.label in ("drawing", "neutral")) > 0.99


def test_policy_picks_the_classifier_with_the_labels():
    policy = DeclinePolicy(("porn", "hentai"), 0.6)
    assert policy.model({"expression": ("happy", "sad"), MODEL: tuple(LABELS)}) == MODEL
    with pytest.raises(ValueError, match="no whole-image classifier has all of these labels.*expression: happy, sad"):
        DeclinePolicy(("nudity",), 0.6).model({"expression": ("happy", "sad")})


def test_policy_declines_at_the_threshold_in_its_labels_only():
    def answer(**scores):
        return Classification(model=MODEL, width=1, height=1,
                              top_k=[Label(label=k, score=v) for k, v in scores.items()])

    policy = DeclinePolicy(("porn", "hentai"), 0.6)
    policy.check(answer(sexy=0.9, porn=0.1))
    policy.check(answer(neutral=0.41, porn=0.59))
    with pytest.raises(ImageDeclined) as declined:
        policy.check(answer(hentai=0.6, neutral=0.4))
    assert declined.value.status == 422 and declined.value.code == "image_declined"
    assert "'hentai' (0.60 >= 0.6)" in declined.value.message


def test_annotate_declines_what_the_policy_names(repository):
    """Configured to decline drawings (a label a test can show with a real image): the horse is refused before
    any face model runs, the astronaut is annotated."""
    settings = dataclasses.replace(Settings.from_env(), repository=repository, decline_labels=("drawing",),
                                   decline_threshold=0.5)
    services = Services.build(settings)

    async def annotate(image):
        return await services.analysis.annotate(b64=base64.b64encode(png(image)).decode())

    async def both():
        try:
            with pytest.raises(ImageDeclined, match=f"{MODEL} classifies the image as 'drawing'"):
                await annotate(horse_drawing())
            return await annotate(photos.astronaut())
        finally:
            await services.close()

    assert asyncio.run(both()).startswith(b"\x89PNG")
