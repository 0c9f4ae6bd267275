"""The detection cascade's second stage: which unsure boxes (a detector's boxes scoring under its threshold but
above its `unsure_floor`, and the faces its second detector family adds) the face mesh confirms as faces.

A box is confirmed when the mesh, run on the box's crop, is sure it holds a face (presence at least
`CONFIRMING_PRESENCE`, above the 0.5 every kept box needs), the five points it places lie inside the box (so the
face it saw is this box's and not a neighbour's caught in the enlarged crop), and the box overlaps no face found at
the threshold (a shifted second box on a found face scores 0.27-0.39 and the mesh sees that face in it).
Measured (benchmarks, scenario `detectors`; the presences read off the same boxes): of the boxes scoring 0.25-0.5
on the labelled set and on the photos of the fixtures, the strays on faces already found overlap them by IoU 0.15-0.30
and have presence 0.87-1.0 (one 0.002); the strays on no face have presence 0.002-0.05. Of the faces BlazeFace full
range (the default's second family) adds on the labelled sets, the 24 on labelled faces have presence 0.14-1.0 (23 of
them 0.99 or more, kept; one cut by the frame, 0.14, dropped), the 2 strays 0.0 (a face in a framed picture on the
wall) and 0.32 (a round object in a tilted photo), both dropped.

The mesh's word is its look at the box turned upright (`LandmarkModel.locate`: by BlazeFace's eyes where the box is
BlazeFace's, then by the roll its last look read). With one look square with the image (the default until then) a
face tilted 30° had presence 0.34 and was dropped and the round object 0.93 and was kept; of the other presences
above, only a stray on a found face (0.71, now 0.87; dropped by the overlap either way) and the face cut by the frame
(0.50, now 0.14; dropped either way) moved by more than 0.05.
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
