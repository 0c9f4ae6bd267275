"""Checks on everything that enters the gallery, from a caller or from an imported file (InvalidRequest)."""

from __future__ import annotations

import datetime
import json
import re
import uuid
from typing import Any

import numpy as np

from faceserve.errors import InvalidRequest
from faceserve.gallery.records import Box, EmbeddingModel

MAX_NAME_CHARS = 200
SHA256 = re.compile(r"[0-9a-f]{64}")


def name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("an identity needs a non-empty name")
    if len(value) > MAX_NAME_CHARS:
        raise InvalidRequest(f"an identity's name has at most {MAX_NAME_CHARS} characters")
    return value.strip()


def metadata_json(value: Any) -> str:
    """The metadata object as the JSON text stored."""
    if value is None:
        return "{}"
    if not isinstance(value, dict):
        raise InvalidRequest("an identity's metadata is a JSON object")
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)
    except (TypeError, ValueError) as exc:
        raise InvalidRequest(f"an identity's metadata must be JSON: {exc}") from None


def vector_bytes(model: EmbeddingModel, vector: Any) -> bytes:
    """The embedding as stored: `model.dimension` little-endian float32."""
    array = np.asarray(vector, dtype=np.float32).reshape(-1)
    if array.size != model.dimension:
        raise InvalidRequest(f"an embedding of {model.name} has {model.dimension} values, not {array.size}")
    if not np.all(np.isfinite(array)) or not np.any(array):
        raise InvalidRequest("an embedding must be finite and non-zero")
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
    if value is None:
        return None
    if not isinstance(value, (bytes, bytearray, memoryview)):
        raise InvalidRequest("a thumbnail is bytes")
    return bytes(value)


def record_id(value: Any) -> str:
    """An id from an imported file: a UUID in its canonical text form, as `new_id` makes them."""
    try:
        if isinstance(value, str) and str(uuid.UUID(value)) == value:
            return value
    except ValueError:
        pass
    raise InvalidRequest(f"{value!r} is not an id of a gallery (a UUID in lowercase text)")


def timestamp(value: Any) -> str:
    """A creation time from an imported file: ISO 8601 with its offset, as `utc_now` writes them."""
    try:
        if isinstance(value, str) and datetime.datetime.fromisoformat(value).tzinfo is not None:
            return value
    except ValueError:
        pass
    raise InvalidRequest(f"{value!r} is not an ISO 8601 time with an offset")
