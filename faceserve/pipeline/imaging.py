"""Image bytes in, RGB pixels out (and back): decoding, EXIF, limits on what is really decoded, rotation, encoding."""

from __future__ import annotations

import dataclasses
import io
import struct

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from faceserve.errors import InvalidImage, LimitExceeded

# Formats we decode; no other Pillow plugin (PDF, EPS, ICO ...) even parses the data.
ACCEPTED_FORMATS = {"JPEG", "MPO", "PNG", "WEBP", "BMP", "TIFF", "GIF"}
_OPENERS = sorted(ACCEPTED_FORMATS - {"MPO"})  # the JPEG plugin opens MPO files
# Pillow's own bomb check would raise at 2x its limit; ours runs first on the header.
Image.MAX_IMAGE_PIXELS = None
# What Pillow raises for a malformed file, found by fuzzing every accepted format: besides OSError,
# ValueError, SyntaxError and EOFError, TIFF tags raise TypeError and KeyError, GIF blocks IndexError
# and struct.error (Image.open itself takes SyntaxError, IndexError, TypeError, struct.error to mean
# "not this format"). Only Pillow calls are wrapped, so an error in our own code stays a 500.
PILLOW_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, IndexError, TypeError, KeyError)
# Colour conversion works on strips of about this many pixels: the output array is the only full-size copy.
STRIP_PIXELS = 1 << 16


@dataclasses.dataclass(frozen=True)
class DecodeLimits:
    max_pixels: int = 40_000_000
    max_side: int = 20_000
    min_side: int = 1
    max_frames: int = 100


def decode(data: bytes, limits: DecodeLimits = DecodeLimits()) -> np.ndarray:
    """Decode image bytes to an upright RGB uint8 array (first frame of animations).

    Every frame's size and the frame count are checked from the headers before any pixel
    is decoded (`probe`); only the first frame is decoded, and the result is checked again.
    """
    image = _open(data, limits)
    if image.format == "JPEG" and image.mode == "RGB" and (pixels := _decode_jpeg(data)) is not None:
        return _checked(pixels, limits)
    try:
        image.load()
        ImageOps.exif_transpose(image, in_place=True)  # no copy unless an orientation tag says so
    except PILLOW_ERRORS as exc:
        raise InvalidImage(f"the image data is corrupt or truncated: {exc}") from None
    return _checked(_to_rgb(image), limits)


def probe(data: bytes, limits: DecodeLimits = DecodeLimits()) -> tuple[int, int]:
    """(width, height) of the first frame as stored, after every check `decode` makes before
    decoding; no pixel is decoded."""
    return _open(data, limits).size


def _open(data: bytes, limits: DecodeLimits) -> Image.Image:
    """The image opened at its first frame, every frame and the frame count within the limits."""
    if not data:
        raise InvalidImage("the image is empty (0 bytes)", code="empty_image")
    if (canvas := _webp_canvas(data)) is not None:  # libwebp allocates the whole canvas when the file is opened
        _check_size(*canvas, limits)
    try:
        image = Image.open(io.BytesIO(data), formats=_OPENERS)
    except UnidentifiedImageError:
        raise InvalidImage("the data is not an image in a supported format "
                           f"({', '.join(_OPENERS)})") from None
    except PILLOW_ERRORS as exc:
        raise InvalidImage(f"the image header cannot be read: {exc}") from None
    _check_size(*image.size, limits)
    if min(image.size) < limits.min_side:
        raise InvalidImage(f"the image is {image.width}x{image.height} pixels", code="image_too_small")
    _check_frames(image, data, limits)
    return image


def _check_size(width: int, height: int, limits: DecodeLimits, what: str = "the image") -> None:
    if width * height > limits.max_pixels or max(width, height) > limits.max_side:
        raise LimitExceeded(
            f"{what} is {width}x{height} pixels; the limit is {limits.max_pixels} pixels "
            f"and {limits.max_side} pixels a side",
            code="image_too_large",
        )


def _checked(pixels: np.ndarray, limits: DecodeLimits) -> np.ndarray:
    _check_size(pixels.shape[1], pixels.shape[0], limits, "the decoded image")
    return pixels


def _decode_jpeg(data: bytes) -> np.ndarray | None:
    """A colour JPEG decoded by OpenCV in one call, EXIF orientation applied as Pillow would.

    The same libjpeg-turbo pixels as Pillow's path, without its chunked decode and copies.
    None when the data does not end at the EOI marker (a truncated file decodes to grey
    here without an error) or OpenCV cannot read it: Pillow then decodes or says what is wrong.
    """
    if not data.endswith(b"\xff\xd9"):
        return None
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)


# ---- frames: counted and measured from the container, never by decoding them

def _check_frames(image: Image.Image, data: bytes, limits: DecodeLimits) -> None:
    """Refuse a file with more than `max_frames` frames, or any frame past the size limits.

    Only the first frame is ever decoded, and no frame is decoded to count or measure them:
    Pillow's GIF and APNG `seek` composite every earlier frame onto the full canvas, and its
    GIF canvas grows to hold a frame placed outside the logical screen.
    """
    stop = limits.max_frames + 1
    if image.format == "GIF":
        frames, canvas = _gif_frames(data, stop)
        _check_size(*canvas, limits, "the canvas its frames need")
    elif image.format == "PNG" and getattr(image, "n_frames", 1) > 1:
        frames = image.n_frames  # acTL
        if frames < stop:
            for number, (width, height) in enumerate(_apng_frame_extents(data, frames), 1):
                _check_size(width, height, limits, f"frame {number} (with its offset)")
    elif image.format == "MPO":
        frames = image.n_frames  # the MP index
        if frames < stop:
            _walk_pages(image, frames, limits)
    elif image.format == "TIFF":
        frames = _walk_pages(image, stop, limits)
    else:  # WebP: libwebp's demuxer counts the frames and keeps each inside the canvas
        frames = getattr(image, "n_frames", 1)
    if frames > limits.max_frames:
        raise LimitExceeded(f"the image has more than {limits.max_frames} frames; "
                            f"the limit is {limits.max_frames} frames", code="too_many_frames")


def _walk_pages(image: Image.Image, pages: int, limits: DecodeLimits) -> int:
    """How many of the first `pages` pages (TIFF) or images (MPO) there are, each one's size
    checked: `seek` in these plugins reads only that page's header. Leaves the first page selected."""
    for index in range(1, pages):
        if not _seek(image, index):
            pages = index
            break
        _check_size(*image.size, limits, f"frame {index + 1}")
    _seek(image, 0)
    return pages


def _seek(image: Image.Image, index: int) -> bool:
    """Select frame `index`; False if there is none."""
    try:
        image.seek(index)
    except EOFError:
        return False
    except PILLOW_ERRORS as exc:
        raise InvalidImage(f"the image frames are corrupt (frame {index + 1}): {exc}") from None
    return True


def _gif_frames(data: bytes, stop: int) -> tuple[int, tuple[int, int]]:
    """Frames of a GIF (counting stops at `stop`) and the canvas Pillow grows to hold them all,
    read from the block structure: the screen, then extensions and image descriptors."""
    width, height, flags = struct.unpack_from("<HHB", data, 6)
    position, frames = 13 + _colour_table(flags), 0
    while position < len(data) and frames < stop:
        block = data[position]
        if block == 0x3B:  # trailer
            break
        if block == 0x21:  # extension: a label, then sub-blocks
            position = _skip_sub_blocks(data, position + 2)
        elif block == 0x2C and position + 10 <= len(data):  # image descriptor, LZW code size, sub-blocks
            x, y, w, h, flags = struct.unpack_from("<HHHHB", data, position + 1)
            width, height, frames = max(width, x + w), max(height, y + h), frames + 1
            position = _skip_sub_blocks(data, position + 11 + _colour_table(flags))
        elif block == 0x2C:
            break
        else:
            position += 1  # Pillow skips stray bytes between blocks too
    return frames, (width, height)


def _colour_table(flags: int) -> int:
    return 3 << ((flags & 7) + 1) if flags & 0x80 else 0


def _skip_sub_blocks(data: bytes, position: int) -> int:
    while position < len(data) and data[position]:
        position += 1 + data[position]
    return position + 1


def _apng_frame_extents(data: bytes, frames: int) -> list[tuple[int, int]]:
    """(x + width, y + height) of the first `frames` fcTL chunks: where each frame ends."""
    extents, position = [], 8
    while position + 8 <= len(data) and len(extents) < frames:
        length, kind = struct.unpack_from(">I4s", data, position)
        if kind == b"fcTL" and length >= 20 and position + 28 <= len(data):
            width, height, x, y = struct.unpack_from(">IIII", data, position + 12)
            extents.append((x + width, y + height))
        position += 12 + length
    return extents


def _webp_canvas(data: bytes) -> tuple[int, int] | None:
    """The canvas size in a WebP's first chunk (VP8X, VP8L or VP8), or None if it is not a WebP."""
    if data[:4] != b"RIFF" or data[8:12] != b"WEBP" or len(data) < 30:
        return None
    chunk = data[12:16]
    if chunk == b"VP8X":
        return int.from_bytes(data[24:27], "little") + 1, int.from_bytes(data[27:30], "little") + 1
    if chunk == b"VP8L" and data[20] == 0x2F:
        bits = int.from_bytes(data[21:25], "little")
        return (bits & 0x3FFF) + 1, (bits >> 14 & 0x3FFF) + 1
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        return int.from_bytes(data[26:28], "little") & 0x3FFF, int.from_bytes(data[28:30], "little") & 0x3FFF
    return None


# ---- colour: one full-size output array, filled a strip at a time

def _to_rgb(image: Image.Image) -> np.ndarray:
    width, height = image.size
    convert = _strip_converter(image)
    pixels = np.empty((height, width, 3), np.uint8)
    rows = max(1, STRIP_PIXELS // width)
    for top in range(0, height, rows):
        bottom = min(top + rows, height)
        pixels[top:bottom] = convert(image.crop((0, top, width, bottom)))
    return pixels


def _strip_converter(image: Image.Image):
    """A function from a strip of `image` to its RGB rows (or grey ones, broadcast to RGB), 0..255."""
    mode = image.mode
    if mode in ("I;16", "I;16B", "I;16L", "I"):
        peak = 65535 if mode.startswith("I;16") or image.getextrema()[1] > 255 else 255
        return lambda strip: (np.clip(np.asarray(strip), 0, peak).astype(np.uint32) * 255 // peak
                              ).astype(np.uint8)[:, :, None]
    if mode == "F":
        return lambda strip: np.clip(np.asarray(strip), 0, 255).astype(np.uint8)[:, :, None]
    if mode in ("RGBA", "LA", "La", "PA", "RGBa") or (mode == "P" and "transparency" in image.info):
        return _on_white
    if mode == "RGB":
        return np.asarray
    return lambda strip: np.asarray(strip.convert("RGB"))


def _on_white(strip: Image.Image) -> np.ndarray:
    """Alpha composited on white, to the nearest integer."""
    if strip.mode == "La":  # premultiplied: Pillow converts it only to LA
        strip = strip.convert("LA")
    rgba = np.asarray(strip.convert("RGBA"))
    alpha = rgba[:, :, 3:].astype(np.uint16)
    rgb = rgba[:, :, :3] * alpha
    np.subtract(255, alpha, out=alpha)
    rgb += alpha * 255 + 127
    rgb //= 255
    return rgb


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
