"""The detection cascade's second stage: which unsure boxes (a detector's boxes scoring under its threshold but
above its `unsure_floor`, and the faces its second detector family adds) the face mesh confirms as faces.

A box is confirmed when the mesh, run on the box's crop, is sure it holds a face (presence at least
`CONFIRMING_PRESENCE`, above the 0.5 every kept box needs), the five points it places lie inside the box (so the
face it saw is this box's and not a neighbour's caught in the enlarged crop), and the box overlaps no face found at
the threshold (a shifted second box on a found face scores 0.27-0.39 and the mesh sees that face in it).
Measured (benchmarks, scenario `detectors`): of the boxes scoring 0.25-0.5 on the labelled set and on the photos
of the fixtures, the strays on faces already found have presence 0.999-1.0 and overlap them by IoU 0.17-0.37; the
strays on no face have presence 0.002-0.71. Of the faces BlazeFace full range (the default's second family) adds
on the labelled sets, the 24 on labelled faces have presence 0.34-1.0 (22 of them 0.99 or more, kept; a face tilted
30° and one cut by the frame, 0.34 and 0.50, dropped), the 2 strays 0.0 (a face in a framed picture on the wall,
dropped) and 0.93 (a round object in a tilted photo, kept).
"""

from __future__ import annotations

from typing import Sequence

from faceserve.models.detectors import DUPLICATE_IOU, Detection, iou
from faceserve.models.landmarks import Placement

CONFIRMING_PRESENCE = 0.9
# The mesh's points may reach past a turned face's tight box: held to the box enlarged by this share of its width.
POINTS_MARGIN = 0.1


def confirmed(sure: Sequence[Detection], unsure: Sequence[Detection],
              placements: Sequence[Placement | None]) -> list[Detection]:
    """The unsure detections the face mesh confirms (no placement: no mesh to ask, none confirmed)."""
    kept = []
    for detection, placement in zip(unsure, placements):
        if placement is None or placement.presence < CONFIRMING_PRESENCE:
            continue
        if not _points_inside(placement, detection.box):
            continue
        if any(iou(face.box, detection.box) > DUPLICATE_IOU for face in sure):
            continue
        kept.append(detection)
    return kept


def _points_inside(placement: Placement, box: Sequence[float]) -> bool:
    margin = POINTS_MARGIN * (box[2] - box[0])
    return all(box[0] - margin <= x <= box[2] + margin and box[1] - margin <= y <= box[3] + margin
               for x, y in placement.landmarks)
