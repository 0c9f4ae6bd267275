"""Model inputs from pixels, by each model's own recipe (read from its ModelSpec).

Every role builds its input here: face crops for heads, the whole image (letterboxed or
resized) for detectors and classifiers. Colour order, scaling and crop margins come from
the repository, never from code.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Sequence

import cv2
import numpy as np

from faceserve.models.spec import ModelSpec


@dataclasses.dataclass(frozen=True)
class Letterbox:
    """Where the model's square input sits in the original image."""

    scale: float  # original pixels per input pixel
    pad_x: float  # padding added on the left, in original pixels
    pad_y: float


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, Letterbox]:
    """Pad the image to a centred square, resize it to size x size (uint8, same channels)."""
    height, width = image.shape[:2]
    side = max(height, width)
    pad_y, pad_x = (side - height) // 2, (side - width) // 2
    square = cv2.copyMakeBorder(image, pad_y, side - height - pad_y, pad_x, side - width - pad_x,
                                cv2.BORDER_CONSTANT, value=0)
    resized = cv2.resize(square, (size, size), interpolation=cv2.INTER_AREA
                         if side > size else cv2.INTER_LINEAR)
    return resized, Letterbox(scale=side / size, pad_x=pad_x, pad_y=pad_y)


def square_box(box: Sequence[float]) -> tuple[float, float, float, float]:
    """A square of the box's longer side around its centre."""
    x1, y1, x2, y2 = box
    half = max(x2 - x1, y2 - y1) / 2
    centre_x, centre_y = (x1 + x2) / 2, (y1 + y2) / 2
    return centre_x - half, centre_y - half, centre_x + half, centre_y + half


def crop_box(box: Sequence[float], spec: ModelSpec, image_shape: tuple[int, int]) -> tuple[int, int, int, int]:
    """The face box (squared when the recipe says so) enlarged by the model's margin and padding,
    clipped to the image."""
    x1, y1, x2, y2 = square_box(box) if spec.crop.square else box
    width, height = x2 - x1, y2 - y1
    dx = spec.crop.margin * width + spec.crop.pad_px[0]
    dy = spec.crop.margin * height + spec.crop.pad_px[1]
    img_h, img_w = image_shape
    left, top = max(0, int(round(x1 - dx))), max(0, int(round(y1 - dy)))
    right, bottom = min(img_w, int(round(x2 + dx))), min(img_h, int(round(y2 + dy)))
    return left, top, max(right, left + 1), max(bottom, top + 1)


def _colour(pixels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    if spec.colour == "gray":
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2GRAY)[:, :, None]
    if spec.colour == "bgr":
        return cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)
    return pixels


def _scale(pixels: np.ndarray, spec: ModelSpec) -> np.ndarray:
    pixels = pixels.astype(np.float32)
    if spec.crop.stretch:
        low, high = float(pixels.min()), float(pixels.max())
        pixels = (pixels - low) * (255.0 / (high - low)) if high > low else np.zeros_like(pixels)
    return pixels * spec.scale + spec.offset


# ArcFace's five-point template (eyes, nose tip, mouth corners, in image order) for a 112x112 crop,
# as fractions of the crop's side: where `crop.align` recipes put a face's landmarks.
ALIGNMENT_TEMPLATE = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                               [41.5493, 92.3655], [70.7299, 92.2041]], dtype=np.float32) / 112.0


def square_transform(box: Sequence[float], spec: ModelSpec, roll: float = 0.0) -> np.ndarray:
    """The 2x3 affine map from image pixels to the model's input for the recipe's square crop, turned by `roll`
    degrees about the box's centre so that a face whose eye line slopes down by `roll` towards the image's right
    (`landmarks.Placement.roll`) comes out upright; not clipped: parts outside the image come out black, so the face
    keeps its shape and place (what a model that locates points in its crop needs)."""
    x1, y1, x2, y2 = square_box(box)
    side = (x2 - x1) * (1 + 2 * spec.crop.margin)
    cos, sin = math.cos(math.radians(roll)), math.sin(math.radians(roll))
    linear = np.array([[spec.width / side], [spec.height / side]]) * np.array([[cos, sin], [-sin, cos]])
    centre = np.array([(x1 + x2) / 2, (y1 + y2) / 2])
    return np.hstack([linear, (np.array([spec.width / 2, spec.height / 2]) - linear @ centre)[:, None]])


# Where dlib's face chip (get_face_chip_details) has our five landmarks, at padding 0, as fractions of its side:
# measured, as the median over the 79 faces of the detection set and the registry photos that dlib and we both
# find, of our landmarks carried into the chip by dlib's own transform of its five points (docs/identity.md).
# dlib's 68-point mean face gives nearly the same (eyes 0.228 / 0.752, 0.224; nose 0.490, 0.516; mouth 0.254 /
# 0.726, 0.780), but the face mesh's nose tip sits lower and its eye centres wider: the measured template brings
# dlib's descriptor of our chip closer to its descriptor of its own chip (docs/identity.md). dlib's padding p puts
# a point t at (p + t) / (1 + 2p), the recipe's margin: `crop.margin = 0.25` is the chip dlib's face ResNet takes
# (get_face_chip(image, shape, 150, 0.25)).
DLIB_CHIP_TEMPLATE = np.array([[0.2189, 0.2166], [0.7690, 0.2184], [0.4852, 0.5649], [0.2534, 0.7785],
                               [0.7404, 0.7795]], dtype=np.float32)
TEMPLATES = {"arcface": ALIGNMENT_TEMPLATE, "dlib": DLIB_CHIP_TEMPLATE}


def alignment_transform(landmarks: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The similarity transform (rotation, uniform scale, shift) that best puts the five landmarks on
    the recipe's template, for the model's input size; the recipe's margin shrinks the template towards the
    centre (margin m on every side: the face takes 1 / (1 + 2m) of the side it takes at margin 0)."""
    template = (0.5 + (TEMPLATES[spec.crop.template] - 0.5) / (1 + 2 * spec.crop.margin)) * np.array(
        [spec.width, spec.height], dtype=np.float32)
    matrix, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, dtype=np.float32), template, method=cv2.LMEDS)
    return matrix


def warped_face(image: np.ndarray, transform: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """One input row: the image warped by `transform` into the model's input size."""
    pixels = cv2.warpAffine(image, transform, (spec.width, spec.height), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return _scale(_colour(pixels, spec).reshape(spec.input_shape), spec)


def face_batch(image: np.ndarray, boxes: Sequence[Sequence[float]], spec: ModelSpec,
               landmarks: Sequence[np.ndarray | None] | None = None) -> np.ndarray:
    """One [N, H, W, C] float32 batch of face crops for this model: aligned by the face's landmarks when
    the recipe asks for it and they are known, else cut from the (squared, enlarged) box."""
    batch = np.empty((len(boxes), spec.height, spec.width, spec.channels), dtype=np.float32)
    for i, box in enumerate(boxes):
        points = None if landmarks is None else landmarks[i]
        if spec.crop.align and points is not None:
            batch[i] = warped_face(image, alignment_transform(points, spec), spec)
            continue
        left, top, right, bottom = crop_box(box, spec, image.shape[:2])
        crop = cv2.resize(image[top:bottom, left:right], (spec.width, spec.height),
                          interpolation=cv2.INTER_LINEAR)
        batch[i] = _scale(_colour(crop, spec).reshape(spec.input_shape), spec)
    return batch


def whole_image(image: np.ndarray, spec: ModelSpec) -> tuple[np.ndarray, Letterbox | None]:
    """A [1, H, W, C] input for the whole image (letterboxed when the model asks for it)."""
    frame = None
    if spec.letterbox:
        if spec.height != spec.width:
            raise ValueError(f"{spec.name}: letterboxing needs a square input")
        pixels, frame = letterbox(image, spec.height)
    else:
        pixels = cv2.resize(image, (spec.width, spec.height), interpolation=cv2.INTER_AREA)
    return _scale(_colour(pixels, spec).reshape(spec.input_shape), spec)[None], frame
