"""The annotated photo: each face boxed and captioned with its heads' answers (service and CLI alike)."""

from __future__ import annotations

import cv2
import numpy as np

from faceserve.pipeline.schemas import PLACEMENT_FIELDS, Analysis, Face

BOX_COLOUR = (0, 255, 0)  # RGB
TEXT_COLOUR = (0, 0, 0)
LANDMARK_COLOUR = (255, 0, 255)


def caption(face: Face) -> str:
    """The heads' answers in response order: a label for classifiers, a whole number for regressions."""
    parts = []
    for name, value in face:
        if name in PLACEMENT_FIELDS or value is None:
            continue
        if isinstance(value, (int, float)):
            parts.append(f"{value:.0f}")
        else:
            label = value.get("label") if isinstance(value, dict) else getattr(value, "label", None)
            if label:
                parts.append(str(label))
    return ", ".join(parts)


def annotate(image: np.ndarray, analysis: Analysis, landmarks: bool = False) -> np.ndarray:
    drawn = draw_boxes(image, [(f.box.x1, f.box.y1, f.box.x2, f.box.y2) for f in analysis.faces],
                       [caption(f) for f in analysis.faces])
    if landmarks:
        radius = max(2, round(max(image.shape[:2]) / 300))
        for face in analysis.faces:
            for x, y in face.landmarks or ():
                cv2.circle(drawn, (round(x), round(y)), radius, LANDMARK_COLOUR, -1, cv2.LINE_AA)
    return drawn


def draw_boxes(image: np.ndarray, boxes: list[tuple[float, float, float, float]],
               captions: list[str]) -> np.ndarray:
    """The image with each box outlined and captioned (as the original demo did)."""
    canvas = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    scale = max(0.4, max(image.shape[:2]) / 1200)
    for (x1, y1, x2, y2), text in zip(boxes, captions):
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(canvas, p1, p2, BOX_COLOUR, thickness)
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, p1[1] - th - base - 2)
        cv2.rectangle(canvas, (p1[0], top), (p1[0] + tw + 2, top + th + base + 2), BOX_COLOUR, -1)
        cv2.putText(canvas, text, (p1[0] + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    TEXT_COLOUR, thickness, cv2.LINE_AA)
    return canvas
