"""Where a request's image bytes come from: an upload, base64 in JSON, or a URL."""

from __future__ import annotations

import base64
import binascii
import fnmatch
from pathlib import Path, PurePosixPath
from typing import Any

from faceserve.errors import InvalidRequest, PayloadTooLarge
from faceserve.settings import Limits

FIELDS = "`image` (multipart upload), `image_base64` (JSON) or `image_url` (JSON)"
IMAGE_MEDIA_TYPES = "image/*"


class ImageUpload(PurePosixPath):
    """An uploaded image: its file name, and its bytes in memory (`read_bytes`).

    The endpoints' file type instead of `Path`, for which BentoML writes every upload to a temporary file of a
    per-request folder, which the endpoint reads back and BentoML deletes after the answer: a disk write and 0.11
    ms of CPU per 66 kB upload against 0.007 ms (benchmarks/results/2026-12-07-perf). BentoML takes it for a file
    field as it takes a `Path` (a `PurePath`), and its schema is the same as BentoML's for `Annotated[Path,
    ContentType("image/*")]`: a binary file of an image media type.
    """

    __slots__ = ("data",)

    @classmethod
    def of(cls, name: str | None, data: bytes) -> "ImageUpload":
        upload = cls(PurePosixPath(name or "upload").name or "upload")
        upload.data = data
        return upload

    def read_bytes(self) -> bytes:
        return self.data

    @classmethod
    def _validate(cls, value: Any) -> "ImageUpload":
        from starlette.datastructures import UploadFile

        if isinstance(value, ImageUpload):
            return value
        if isinstance(value, UploadFile):  # what BentoML's multipart parser gives a file field
            if value.content_type is not None and not fnmatch.fnmatch(value.content_type, IMAGE_MEDIA_TYPES):
                raise ValueError(f"Invalid content type {value.content_type}, expected {IMAGE_MEDIA_TYPES}")
            value.file.seek(0)
            return cls.of(value.filename, value.file.read())
        if isinstance(value, bytes):
            return cls.of(None, value)
        raise ValueError("Invalid file type")  # text included (JSON), as BentoML's file type refuses it

    @classmethod
    def __get_pydantic_core_schema__(cls, source, handler):
        from pydantic_core import core_schema
        return core_schema.no_info_plain_validator_function(
            cls._validate, serialization=core_schema.plain_serializer_function_ser_schema(lambda u: u.data))

    @classmethod
    def __get_pydantic_json_schema__(cls, schema, handler) -> dict:
        if handler.mode == "validation":  # what BentoML's FileSchema says of an image/* Path
            return {"type": "file", "format": "image", "content_type": IMAGE_MEDIA_TYPES}
        return {"type": "string", "format": "binary"}


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


async def image_bytes(upload: ImageUpload | Path | None, b64: str | None, url: str | None, limits: Limits,
                      fetch=None) -> bytes:
    """The bytes of exactly one image given by one of the three fields."""
    given = [name for name, value in (("image", upload), ("image_base64", b64), ("image_url", url))
             if value is not None]
    if len(given) != 1:
        problem = "no image was given" if not given else f"several images were given ({', '.join(given)})"
        raise InvalidRequest(f"{problem}; send exactly one of {FIELDS}", code="missing_image"
                             if not given else "ambiguous_image")
    if upload is not None:
        data = upload.read_bytes()
        if len(data) > limits.max_body_bytes:
            raise PayloadTooLarge(f"the upload is {len(data)} bytes; the limit is {limits.max_body_bytes}")
        return data
    if b64 is not None:
        return from_base64(b64, limits)
    return await require_fetch(fetch)(url)


def require_fetch(fetch):
    """The URL fetcher, or the error saying that this server fetches no URL."""
    if fetch is None:
        raise InvalidRequest("fetching images by URL is disabled on this server (FACESERVE_URL_FETCH=1 enables it)",
                             code="url_fetch_disabled")
    return fetch
