"""Where a request's image bytes come from: an upload, base64 in JSON, or a URL."""

from __future__ import annotations

import base64
import binascii
from pathlib import Path

from faceserve.errors import InvalidRequest, PayloadTooLarge
from faceserve.settings import Limits

FIELDS = "`image` (multipart upload), `image_base64` (JSON) or `image_url` (JSON)"


def from_base64(text: str, limits: Limits) -> bytes:
    if not isinstance(text, str):
        raise InvalidRequest("image_base64 must be a string", code="invalid_base64")
    if text.startswith("data:"):
        text = text.partition(",")[2]
    if len(text) * 3 // 4 > limits.max_body_bytes:
        raise PayloadTooLarge(f"the decoded image would exceed the {limits.max_body_bytes}-byte limit")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest("image_base64 is not valid base64", code="invalid_base64") from None


async def image_bytes(upload: Path | None, b64: str | None, url: str | None, limits: Limits,
                      fetch=None) -> bytes:
    """The bytes of exactly one image given by one of the three fields."""
    given = [name for name, value in (("image", upload), ("image_base64", b64), ("image_url", url))
             if value is not None]
    if len(given) != 1:
        problem = "no image was given" if not given else f"several images were given ({', '.join(given)})"
        raise InvalidRequest(f"{problem}; send exactly one of {FIELDS}", code="missing_image"
                             if not given else "ambiguous_image")
    if upload is not None:
        size = upload.stat().st_size
        if size > limits.max_body_bytes:
            raise PayloadTooLarge(f"the upload is {size} bytes; the limit is {limits.max_body_bytes}")
        return upload.read_bytes()
    if b64 is not None:
        return from_base64(b64, limits)
    return await require_fetch(fetch)(url)


def require_fetch(fetch):
    """The URL fetcher, or the error saying that this server fetches no URL."""
    if fetch is None:
        raise InvalidRequest("fetching images by URL is disabled on this server (FACESERVE_URL_FETCH=1 enables it)",
                             code="url_fetch_disabled")
    return fetch
