"""Checks on everything that enters the gallery, from a caller or from an imported file (InvalidRequest).

Bounds (docs/store.md): a name of at most MAX_NAME_CHARS characters, no control characters; metadata a JSON
object of at most MAX_METADATA_BYTES bytes as stored and MAX_METADATA_DEPTH levels of nesting; text that UTF-8
cannot encode (a lone surrogate, which `json.loads` accepts) nowhere; an embedding finite and of a norm well
above zero in float64 whose float32 unit vector is finite (what the index searches with); a thumbnail an image
Pillow decodes within MAX_THUMBNAIL_SIDE pixels a side, stored as the JPEG re-encoded from its pixels, and its frame
(where it lies in the photo) finite, never enlarging, and putting the face's box on the thumbnail.
"""

from __future__ import annotations

import datetime
import io
import json
import math
import re
import uuid
import warnings
from typing import Any

import numpy as np
from PIL import Image

from faceserve.errors import InvalidRequest
from faceserve.gallery.records import Box, EmbeddingModel, ThumbnailFrame
from faceserve.gallery.similarity import normalise

MAX_NAME_CHARS = 200
MAX_METADATA_BYTES = 4096
MAX_METADATA_DEPTH = 4  # the object itself is level 1: {"a": {"b": {"c": [1]}}} is the deepest allowed
MIN_NORM = 1e-6  # float64; a real embedding's norm is about 1 (unit rows) or far above
MAX_THUMBNAIL_BYTES = 256 * 1024
MAX_THUMBNAIL_SIDE = 256  # pixels; an enrolment's are made this large at most (faceserve/pipeline/identity.py)
THUMBNAIL_FORMATS = ("JPEG", "PNG")
THUMBNAIL_QUALITY = 90
SHA256 = re.compile(r"[0-9a-f]{64}")
# C0 and C1 controls (NUL cannot even be stored in PostgreSQL text) and lone surrogates (UTF-8 cannot encode them).
UNSTORABLE_IN_NAME = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("an identity needs a non-empty name")
    if len(value) > MAX_NAME_CHARS:
        raise InvalidRequest(f"an identity's name has at most {MAX_NAME_CHARS} characters", code="name_too_long")
    if UNSTORABLE_IN_NAME.search(value):
        raise InvalidRequest("an identity's name holds a control character or a lone surrogate (text UTF-8 cannot "
                             "encode)", code="invalid_text")
    return value.strip()


def metadata_json(value: Any) -> str:
    """The metadata object as the JSON text stored (keys sorted: equal objects, equal text)."""
    if value is None:
        return "{}"
    if not isinstance(value, dict):
        raise InvalidRequest("an identity's metadata is a JSON object")
    if depth(value, MAX_METADATA_DEPTH) > MAX_METADATA_DEPTH:
        raise InvalidRequest(f"an identity's metadata is nested at most {MAX_METADATA_DEPTH} levels deep "
                             "(the object itself is the first)", code="metadata_too_deep")
    try:
        text = json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"an identity's metadata must be JSON: {exc}") from None
    size = len(utf8(text, "an identity's metadata"))
    if size > MAX_METADATA_BYTES:
        raise InvalidRequest(f"an identity's metadata is {size} bytes as JSON; the limit is {MAX_METADATA_BYTES}",
                             code="metadata_too_large")
    return text


def depth(value: Any, limit: int) -> int:
    """How deeply lists and objects nest in `value` (a scalar: 0), counted no further than `limit` + 1, without
    recursion (a hostile value may nest thousands deep)."""
    deepest, pending = 0, [(value, 1)]
    while pending:
        item, level = pending.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level <= limit:
                pending.extend((child, level + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def nesting(text: bytes, chunk: int = 1 << 20) -> int:
    """How deeply UTF-8 JSON text nests lists and objects (brackets outside strings), found before parsing and
    without recursion, in linear time and bounded memory: chunks of vectorised passes carrying the state (inside
    a string or not, backslashes just before, depth) from one chunk to the next. Text that is not JSON gets a
    number too; what matters is that a parser reads the same depth as far as it reads the text at all.
    (UTF-8 never uses the bytes of `"`, `\\`, brackets or braces inside a multi-byte character.)"""
    deepest = depth_now = 0
    inside, backslashes = False, 0
    for start in range(0, len(text), chunk):
        raw = np.frombuffer(text, np.uint8, count=min(chunk, len(text) - start), offset=start)
        positions = np.arange(raw.size, dtype=np.int64)
        backslash = raw == ord("\\")
        # the last non-backslash at or before each position (-1 - the run carried in: none yet in this chunk)
        last_other = np.maximum.accumulate(np.where(backslash, -1 - backslashes, positions))
        run_before = positions - 1 - np.concatenate(([-1 - backslashes], last_other[:-1]))
        toggles = (raw == ord('"')) & (run_before % 2 == 0)  # an unescaped quote opens or closes a string
        in_string = (np.cumsum(toggles) + inside) % 2 == 1
        step = ((raw == ord("[")) | (raw == ord("{"))).astype(np.int64) - ((raw == ord("]")) | (raw == ord("}")))
        step[in_string] = 0
        levels = np.cumsum(step) + depth_now
        deepest = max(deepest, int(levels.max()))
        depth_now, inside = int(levels[-1]), bool(in_string[-1])  # the state after the chunk's last byte
        backslashes = int(raw.size - 1 - last_other[-1]) if backslash[-1] else 0
    return deepest


def utf8(text: str, what: str) -> bytes:
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(f"{what} holds a lone surrogate (text UTF-8 cannot encode)", code="invalid_text") from None


def vector_bytes(model: EmbeddingModel, vector: Any) -> bytes:
    """The embedding as stored: `model.dimension` little-endian float32, as given (the index normalises it)."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if array.size != model.dimension:
        raise InvalidRequest(f"an embedding of {model.name} has {model.dimension} values, not {array.size}")
    wide = array.astype(np.float64)
    with np.errstate(all="ignore"):
        unit = normalise(array)
        usable = (np.all(np.isfinite(wide)) and np.linalg.norm(wide) > MIN_NORM and np.all(np.isfinite(unit))
                  and abs(float(np.linalg.norm(unit.astype(np.float64))) - 1.0) < 1e-3)
    if not usable:
        raise InvalidRequest(f"an embedding must be finite, of a norm above {MIN_NORM}, and keep a finite unit "
                             "vector in float32", code="invalid_embedding")
    return array.astype("<f4").tobytes()


def sha256(value: Any) -> str:
    if not isinstance(value, str) or not SHA256.fullmatch(value):
        raise InvalidRequest("image_sha256 is 64 lowercase hexadecimal digits")
    return value


def box(value: Any) -> Box:
    try:
        x1, y1, x2, y2 = (float(v) for v in value)
    except (TypeError, ValueError):
        raise InvalidRequest("a face's box is four numbers: x1, y1, x2, y2") from None
    if not np.all(np.isfinite((x1, y1, x2, y2))) or x2 <= x1 or y2 <= y1:
        raise InvalidRequest("a face's box needs finite x1 < x2 and y1 < y2")
    return x1, y1, x2, y2


def thumbnail(value: Any) -> bytes | None:
    """The thumbnail as stored: a JPEG encoded here from the decoded pixels, whatever bytes came in, so that
    `/identities/face_thumbnail` never serves anything but a JPEG."""
    if value is None:
        return None
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidRequest("a thumbnail is bytes")
    if len(value) > MAX_THUMBNAIL_BYTES:
        raise InvalidRequest(f"a thumbnail has at most {MAX_THUMBNAIL_BYTES} bytes", code="invalid_thumbnail")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(bytes(value)), formats=THUMBNAIL_FORMATS) as image:
                if max(image.size) > MAX_THUMBNAIL_SIDE:
                    raise InvalidRequest(f"a thumbnail is at most {MAX_THUMBNAIL_SIDE} pixels a side, not "
                                         f"{image.width}x{image.height}", code="invalid_thumbnail")
                pixels = image.convert("RGB")
    except InvalidRequest:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidRequest(f"a thumbnail is a JPEG or PNG image Pillow decodes ({type(exc).__name__})",
                             code="invalid_thumbnail") from None
    encoded = io.BytesIO()
    pixels.save(encoded, "JPEG", quality=THUMBNAIL_QUALITY)
    return encoded.getvalue()


def thumbnail_frame(value: Any, face_box: Box, stored_thumbnail: bytes | None) -> ThumbnailFrame | None:
    """Where the stored thumbnail (as `thumbnail` returned it) lies in the photo of `face_box`: finite, a scale in
    (0, 1] (a thumbnail is never larger than its photo), and the box overlapping the thumbnail's pixels, as an
    enrolment's box overlaps its image. None: no thumbnail, or one that is the box alone."""
    if value is None:
        return None
    if not isinstance(value, ThumbnailFrame):
        raise InvalidRequest("a thumbnail frame is {x1, y1, scale}", code="invalid_thumbnail")
    if stored_thumbnail is None:
        raise InvalidRequest("a thumbnail frame needs its thumbnail", code="invalid_thumbnail")
    numbers = (value.x1, value.y1, value.scale)
    try:
        x1, y1, scale = (float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan
                         for v in numbers)
    except OverflowError:  # an integer beyond float's range
        x1 = y1 = scale = math.nan
    if not (math.isfinite(x1) and math.isfinite(y1) and 0 < scale <= 1):
        raise InvalidRequest("a thumbnail frame is finite numbers x1, y1 and a scale in (0, 1]",
                             code="invalid_thumbnail")
    with Image.open(io.BytesIO(stored_thumbnail)) as image:
        width, height = image.size
    frame = ThumbnailFrame(x1, y1, scale)
    left, top, right, bottom = frame.inside(face_box)
    if not (left < width and top < height and right > 0 and bottom > 0):
        raise InvalidRequest(f"the face's box lies outside its {width}x{height} thumbnail by the thumbnail frame",
                             code="invalid_thumbnail")
    return frame


def record_id(value: Any) -> str:
    """An id from an imported file: a UUID in its canonical text form, as `new_id` makes them."""
    try:
        if isinstance(value, str) and str(uuid.UUID(value)) == value:
            return value
    except ValueError:
        pass
    raise InvalidRequest(f"{shown(value)} is not an id of a gallery (a UUID in lowercase text)")


def timestamp(value: Any) -> str:
    """A creation time from an imported file: ISO 8601 with its offset, as `utc_now` writes them."""
    try:
        if isinstance(value, str) and datetime.datetime.fromisoformat(value).tzinfo is not None:
            utf8(value, "a time")
            return value
    except ValueError:
        pass
    raise InvalidRequest(f"{shown(value)} is not an ISO 8601 time with an offset")


def shown(value: Any, chars: int = 60) -> str:
    """A value as a message quotes it: its repr, cut short (a hostile value may be megabytes)."""
    text = ascii(value)
    return text if len(text) <= chars else f"{text[:chars]}..."
