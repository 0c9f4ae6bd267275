"""Where a request's image bytes come from: exactly one of upload, base64 or URL, each within its limits."""

from __future__ import annotations

import asyncio
import base64

import pytest

from faceserve.errors import InvalidRequest, PayloadTooLarge
from faceserve.http import inputs
from faceserve.settings import Limits

LIMITS = Limits(max_body_bytes=100)


def image_bytes(upload=None, b64=None, url=None, fetch=None) -> bytes:
    return asyncio.run(inputs.image_bytes(upload, b64, url, LIMITS, fetch))


def test_exactly_one_source():
    with pytest.raises(InvalidRequest) as none:
        image_bytes()
    assert none.value.code == "missing_image"
    with pytest.raises(InvalidRequest) as two:
        image_bytes(b64="aGk=", url="http://example.com/a.png")
    assert two.value.code == "ambiguous_image" and "image_base64, image_url" in two.value.message


def test_base64_plain_and_as_a_data_uri():
    assert image_bytes(b64=base64.b64encode(b"pixels").decode()) == b"pixels"
    assert image_bytes(b64="data:image/png;base64," + base64.b64encode(b"png").decode()) == b"png"
    with pytest.raises(InvalidRequest) as bad:
        image_bytes(b64="not base64 at all!")
    assert bad.value.code == "invalid_base64"


def test_base64_past_the_body_limit_is_refused_before_decoding():
    with pytest.raises(PayloadTooLarge, match="100-byte limit"):
        image_bytes(b64="A" * 200)


def test_upload_within_and_past_the_limit(tmp_path):
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"x" * 100)
    big.write_bytes(b"x" * 101)
    assert image_bytes(upload=small) == b"x" * 100
    with pytest.raises(PayloadTooLarge, match="101 bytes"):
        image_bytes(upload=big)


def test_urls_go_to_the_fetcher_or_are_refused():
    with pytest.raises(InvalidRequest) as off:
        image_bytes(url="http://example.com/a.png")
    assert off.value.code == "url_fetch_disabled"

    async def fetch(url):
        return url.encode()
    assert image_bytes(url="http://example.com/a.png", fetch=fetch) == b"http://example.com/a.png"


def test_an_image_upload_is_its_bytes_in_memory_within_the_limit():
    upload = inputs.ImageUpload.of("photo.jpg", b"\xff\xd8 jpeg")
    assert upload.name == "photo.jpg" and image_bytes(upload=upload) == b"\xff\xd8 jpeg"
    with pytest.raises(PayloadTooLarge) as large:
        image_bytes(upload=inputs.ImageUpload.of("big.jpg", b"x" * 101))
    assert "101 bytes" in large.value.message


def test_an_image_upload_is_validated_as_bentoml_validates_an_image_path():
    import io
    import warnings
    from pathlib import Path
    from typing import Annotated

    import pydantic
    from _bentoml_sdk.io_models import IOMixin
    from bentoml.validators import ContentType
    from starlette.datastructures import Headers, UploadFile

    class Ours(IOMixin, pydantic.BaseModel):
        image: inputs.ImageUpload = None
        images: list[inputs.ImageUpload] = None

    class Framework(IOMixin, pydantic.BaseModel):
        image: Annotated[Path, ContentType("image/*")] = None
        images: list[Annotated[Path, ContentType("image/*")]] = None

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydantic cannot show a None default through the file serialiser
        for mode in ("validation", "serialization"):
            ours, framework = (m.model_json_schema(mode=mode)["properties"] for m in (Ours, Framework))
            assert ours == framework and ours["image"]["format"] in ("image", "binary")
    assert Ours.multipart_fields == Framework.multipart_fields == ["image", "images"]

    def part(media_type: str) -> UploadFile:
        return UploadFile(io.BytesIO(b"pixels"), filename="../a.png", headers=Headers({"content-type": media_type}))
    parsed = Ours.model_validate({"image": part("image/png"), "images": [part("image/jpeg")]})
    assert (parsed.image.name, parsed.image.read_bytes()) == ("a.png", b"pixels")
    assert [i.read_bytes() for i in parsed.images] == [b"pixels"]
    for model in (Ours, Framework):
        with pytest.raises(pydantic.ValidationError) as wrong:
            model.model_validate({"image": part("text/plain")})
        assert "Invalid content type text/plain" in str(wrong.value)
        with pytest.raises(pydantic.ValidationError) as text:  # a JSON body's string is no file
            model.model_validate({"image": "http://example.com/a.png"})
        assert "Invalid file type" in str(text.value)
