"""`faceserve/services/images.py`: one image given exactly one way, a batch checked before it is decoded, rotation."""

from __future__ import annotations

import base64
import hashlib

import pytest

from faceserve.errors import FaceserveError
from faceserve.services.images import ImageService
from faceserve.settings import Limits
from tests.unit.services.conftest import png


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_one_image_given_exactly_one_way(run, tmp_path):
    images = ImageService(Limits())
    upload = tmp_path / "photo.png"
    upload.write_bytes(png())
    for given, code in (({}, "missing_image"), ({"upload": upload, "b64": b64(png())}, "ambiguous_image"),
                        ({"url": "http://example.com/a.png"}, "url_fetch_disabled")):
        with pytest.raises(FaceserveError) as refused:
            run(images.read(**given))
        assert (refused.value.status, refused.value.code) == (400, code)
    pixels, data = run(images.image_and_bytes(upload=upload))
    assert data == png() and pixels.shape == (2, 3, 3)


def test_the_ready_hook_runs_before_any_image_is_read(run):
    calls = []

    async def ready():
        calls.append("ready")

    images = ImageService(Limits(), ready=ready)
    run(images.image(b64=b64(png())))
    run(images.images_with_digests([(None, b64(png()))]))
    assert calls == ["ready", "ready"]


def test_a_batch_counts_its_images_and_their_pixels_together(run):
    images = ImageService(Limits(max_batch_images=2, max_batch_pixels=12))
    with pytest.raises(FaceserveError) as refused:
        images.batch_items(None, [b64(png())] * 3)
    assert (refused.value.status, refused.value.code, refused.value.message) == (
        422, "batch_size", "send between 1 and 2 images; got 3")
    with pytest.raises(FaceserveError) as refused:
        images.items(None, [b64(png())], range(2, 3))
    assert refused.value.message == "send 2 images; got 1"
    decoded = run(images.images_with_digests(images.batch_items(None, [b64(png()), b64(png(2, 3))])))
    assert [(pixels.shape, digest) for pixels, digest in decoded] == [
        ((2, 3, 3), hashlib.sha256(png()).hexdigest()), ((3, 2, 3), hashlib.sha256(png(2, 3)).hexdigest())]
    with pytest.raises(FaceserveError) as refused:
        run(images.images(images.batch_items(None, [b64(png()), b64(png(3, 3))])))
    assert (refused.value.code, refused.value.message) == (
        "batch_too_large", "the 2 images hold 15 pixels together; the limit is 12 pixels per request")


def test_rotation_checks_its_degrees_before_the_image_and_turns_counter_clockwise(run):
    images = ImageService(Limits())
    with pytest.raises(FaceserveError) as refused:
        run(images.rotate(degrees=45))  # no image given: the degrees are refused first
    assert (refused.value.status, refused.value.code) == (422, "invalid_rotation")
    turned = run(images.decode(run(images.rotate(b64=b64(png(3, 2)), degrees=90))))
    original = run(images.decode(png(3, 2)))
    assert turned.shape == (3, 2, 3)
    assert (turned[0, 0] == original[0, 2]).all()  # the top-right corner comes to the top-left
    assert run(images.rotated(png(), 180, "jpeg"))[:2] == b"\xff\xd8"
