"""BlazeFace full range (MediaPipe's face detector for faces up to ~5 m from the camera): the short-range model's
input recipe and decoding, on a 192x192 input with one anchor per cell of a single stride-4 grid (48x48 = 2304).

MediaPipe's own graph (face_detection_full_range_common.pbtxt) decodes it with these anchors, sigmoid scores, a
threshold of 0.5 and NMS at IoU 0.3: the manifest's entry holds the threshold and the IoU.
"""

from __future__ import annotations

from faceserve.models.detectors.blazeface import BlazeFace

FULL_RANGE = ((4, 1),)


class BlazeFaceFull(BlazeFace):
    name = decoder = "blazeface_full"
    rank = 35
    anchor_layout = FULL_RANGE
