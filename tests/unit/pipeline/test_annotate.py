"""The annotated photo: captions from the heads present, in response order; boxes drawn in place."""

from __future__ import annotations

import numpy as np

from faceserve.pipeline.annotate import BOX_COLOUR, annotate, caption
from faceserve.pipeline.schemas import Analysis, Box, Face, LabelScores


def face(**fields) -> Face:
    return Face(box=Box(x1=10, y1=20, x2=50, y2=70), score=0.9, **fields)


def test_caption_lists_every_head_in_response_order():
    happy = LabelScores(label="happy", score=0.9, scores={"happy": 0.9})
    female = LabelScores(label="female", score=0.8, scores={"female": 0.8})
    assert caption(face(emotion=happy, gender=female, age=31.6)) == "happy, female, 32"
    assert caption(face(emotion=happy)) == "happy"
    extra = {"label": "calm", "score": 0.5, "scores": {"calm": 0.5}}
    assert caption(face(emotion=happy, mood=extra)) == "happy, calm"


def test_annotate_draws_each_box_on_a_copy():
    image = np.zeros((100, 100, 3), np.uint8)
    analysis = Analysis(width=100, height=100, detector="haar", faces=[face(age=40.0)], models={}, missing_heads=[],
                        timings_ms={})
    drawn = annotate(image, analysis)
    assert image.max() == 0 and drawn.shape == image.shape
    assert tuple(drawn[45, 10]) == BOX_COLOUR and tuple(drawn[70, 30]) == BOX_COLOUR  # left and bottom edges
