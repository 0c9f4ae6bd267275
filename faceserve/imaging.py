"""Image bytes in, RGB pixels out (and back): decoding, EXIF, limits, drawing, encoding."""

from __future__ import annotations

import dataclasses
import io
import warnings

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from faceserve.errors import InvalidImage, LimitExceeded

# Formats we decode; anything else Pillow might recognise (PDF, EPS, ICO ...) is refused.
ACCEPTED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"}
# Pillow's own bomb check would raise at 2x its limit; ours runs first on the header.
Image.MAX_IMAGE_PIXELS = None


@dataclasses.dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = 40_000_000
    max_side: int = 20_000
    min_side: int = 1
    max_frames: int = 100


def decode(data: bytes, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """Decode image bytes to an upright RGB uint8 array (first frame of animations).

    Size limits are checked from the header before any pixel is decoded.
    """
    if not data:
        raise InvalidImage("the image is empty (0 bytes)", code="empty_image")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        raise InvalidImage("the data is not an image in a supported format "
                           f"({', '.join(sorted(ACCEPTED_FORMATS - {'MPO'}))})") from None
    except Exception as exc:  # Pillow raises many types for hostile headers
        raise InvalidImage(f"the image header cannot be read: {exc}") from None
    if image.format not in ACCEPTED_FORMATS:
        raise InvalidImage(f"images in {image.format} format are not accepted")
    width, height = image.size
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise LimitExceeded(
            f"the image is {width}x{height} pixels; the limit is {limits.max_pixels} pixels "
            f"and {limits.max_side} pixels a side",
            code="image_too_large",
        )
    if min(width, height) < limits.min_side:
        raise InvalidImage(f"the image is {width}x{height} pixels", code="image_too_small")
    _check_frames(image, limits.max_frames)
    if image.format == "JPEG" and image.mode == "RGB" and (pixels := _decode_jpeg(data)) is not None:
        return pixels
    try:
        image.seek(0)
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # no copy unless an orientation tag says so
        return _to_rgb(image)
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise InvalidImage(f"the image data is corrupt or truncated: {exc}") from None


def _decode_jpeg(data: bytes) -> np.ndarray | None:
    """A colour JPEG decoded by OpenCV in one call, EXIF orientation applied as Pillow would.

    The same libjpeg-turbo pixels as Pillow's path, without its chunked decode and copies.
    None when the data does not end at the EOI marker (a truncated file decodes to grey
    here without an error) or OpenCV cannot read it: Pillow then decodes or says what is wrong.
    """
    if not data.endswith(b"\xff\xd9"):
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)


def _check_frames(image: Image.Image, max_frames: int) -> None:
    """Refuse animations/multi-page files with more than `max_frames` frames.

    Reads frame headers one by one and stops at the limit, so a GIF of a million
    frames costs `max_frames` header reads, never a full scan (`n_frames` would).
    """
    try:
        image.seek(max_frames)
    except EOFError:
        return  # at most max_frames frames
    except Exception as exc:
        raise InvalidImage(f"the image frames are corrupt: {exc}") from None
    raise LimitExceeded(f"the image has more than {max_frames} frames; the limit is {max_frames} frames",
                        code="too_many_frames")


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        pixels = np.asarray(image, dtype=np.uint32)
        peak = 65535 if image.mode.startswith("I;16") or pixels.max() > 255 else 255
        gray = (pixels * 255 // peak).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if image.mode == "F":
        gray = np.clip(np.asarray(image), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(np.repeat(gray[:, :, None], 3, axis=2))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    # np.asarray makes the one copy; convert() would add another even for an RGB image
    return np.asarray(image if image.mode == "RGB" else image.convert("RGB"))


def check_rotation(degrees: int) -> None:
    if degrees % 90:
        raise LimitExceeded(f"rotation must be a multiple of 90 degrees, got {degrees}",
                            code="invalid_rotation")


def rotate(image: np.ndarray, degrees: int) -> np.ndarray:
    """Rotate counter-clockwise by a multiple of 90 degrees."""
    check_rotation(degrees)
    return np.ascontiguousarray(np.rot90(image, k=(degrees // 90) % 4))


def encode(image: np.ndarray, fmt: str = "png", quality: int = 90) -> bytes:
    """Encode an RGB array as PNG or JPEG."""
    bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    if fmt == "png":
        ok, buffer = cv2.imencode(".png", bgr)
    elif fmt in ("jpeg", "jpg"):
        ok, buffer = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    else:
        raise LimitExceeded(f"output format must be png or jpeg, got {fmt!r}", code="invalid_format")
    if not ok:
        raise RuntimeError("encoding failed")
    return buffer.tobytes()


def draw_boxes(image: np.ndarray, boxes: list[tuple[float, float, float, float]],
               captions: list[str]) -> np.ndarray:
    """The image with each box outlined and captioned (as the original demo did)."""
    canvas = image.copy()
    thickness = max(1, round(max(image.shape[:2]) / 400))
    scale = max(0.4, max(image.shape[:2]) / 1200)
    for (x1, y1, x2, y2), caption in zip(boxes, captions):
        p1, p2 = (int(x1), int(y1)), (int(x2), int(y2))
        cv2.rectangle(canvas, p1, p2, (0, 255, 0), thickness)
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = max(0, p1[1] - th - base - 2)
        cv2.rectangle(canvas, (p1[0], top), (p1[0] + tw + 2, top + th + base + 2), (0, 255, 0), -1)
        cv2.putText(canvas, caption, (p1[0] + 1, top + th + 1), cv2.FONT_HERSHEY_SIMPLEX, scale,
                    (0, 0, 0), thickness, cv2.LINE_AA)
    return canvas
