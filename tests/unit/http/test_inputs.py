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
