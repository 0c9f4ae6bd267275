"""The checks on what enters the gallery, alone: embeddings, names, metadata, thumbnails, and the nesting depth of
JSON text measured before it is parsed (issue 20: poison vectors, unbounded metadata, lone surrogates, 5000-deep
lines)."""

from __future__ import annotations

import io
import json
import random

import numpy as np
import pytest
from PIL import Image

from faceserve.errors import InvalidRequest
from faceserve.gallery import EmbeddingModel, ThumbnailFrame, validation
from faceserve.pipeline.identity import THUMBNAIL_SIDE, _thumbnail

MODEL = EmbeddingModel("test-embedder", "1", 1024)


def refused(code: str, check, *args) -> str:
    with pytest.raises(InvalidRequest) as error:
        check(*args)
    assert (error.value.status, error.value.code) == (400, code), error.value.message
    return error.value.message


@pytest.mark.parametrize("values", [
    np.full(1024, 1e-30, np.float32),  # finding 1: its float32 norm underflows to 0, its unit vector is NaN
    np.full(1024, 1e-10, np.float32),  # float64 norm 3.2e-9: far below any embedding
    np.zeros(1024, np.float32),
    np.r_[np.ones(1023, np.float32), np.nan],
    np.r_[np.ones(1023, np.float32), np.inf],
    np.full(1024, 1e30, np.float32),  # finite, but the float32 norm overflows: no unit vector
])
def test_an_embedding_without_a_unit_vector_is_refused(values):
    assert "finite" in refused("invalid_embedding", validation.vector_bytes, MODEL, values)


def test_embeddings_with_a_unit_vector_are_kept_bit_for_bit():
    rng = np.random.default_rng(0)
    for scale in (1.0, 1e-3, 1e3):
        vector = (scale * rng.standard_normal(1024)).astype(np.float32)
        assert validation.vector_bytes(MODEL, vector) == vector.astype("<f4").tobytes()
    assert "1024 values, not 3" in refused("invalid_request", validation.vector_bytes, MODEL, np.ones(3))


def test_names_are_bounded_and_storable():
    assert validation.name("  Ada Lovelace ") == "Ada Lovelace"
    assert validation.name("Zoë 李") == "Zoë 李"
    refused("invalid_request", validation.name, " ")
    refused("invalid_request", validation.name, 7)
    refused("name_too_long", validation.name, "x" * 201)
    for unstorable in ("Ada\ud800", "A\x00da", "line\nbreak", "\x9b"):
        refused("invalid_text", validation.name, unstorable)


def test_metadata_is_a_small_shallow_json_object():
    assert validation.metadata_json(None) == "{}"
    assert validation.metadata_json({"b": 1, "a": {"c": [1, {"d": "ü"}]}}) == '{"a": {"c": [1, {"d": "ü"}]}, "b": 1}'
    refused("invalid_request", validation.metadata_json, ["not", "an", "object"])
    refused("invalid_request", validation.metadata_json, {"x": float("nan")})
    refused("metadata_too_deep", validation.metadata_json, {"a": {"b": {"c": {"d": {}}}}})
    assert "4096" in refused("metadata_too_large", validation.metadata_json, {"x": "y" * 4090})
    validation.metadata_json({"x": "y" * 4080})
    refused("metadata_too_large", validation.metadata_json, {"x": "€" * 1400})  # bytes, not characters
    refused("invalid_text", validation.metadata_json, {"\udc80": 1})
    refused("invalid_text", validation.metadata_json, {"k": ["fine", "\ud800"]})
    deep: dict = {}
    for _ in range(100_000):  # far past the interpreter's recursion limit: measured without recursion
        deep = {"d": deep}
    refused("metadata_too_deep", validation.metadata_json, deep)


def json_depth(value) -> int:
    if isinstance(value, dict):
        return 1 + max(map(json_depth, value.values()), default=0)
    if isinstance(value, list):
        return 1 + max(map(json_depth, value), default=0)
    return 0


def test_nesting_is_measured_as_a_parser_reads_it_across_chunks():
    rng = random.Random(0)
    tricky = ['a"b\\', '\\\\"', "[{", "x", 1, None, '\\"]]', "é[", ""]

    def value(levels: int):
        if levels == 0 or rng.random() < 0.2:
            return rng.choice(tricky)
        if rng.random() < 0.5:
            return [value(levels - 1) for _ in range(rng.randint(0, 3))]
        return {f"{rng.choice(tricky)}{i}": value(levels - 1) for i in range(rng.randint(0, 3))}

    for _ in range(300):
        document = value(rng.randint(0, 9))
        text = json.dumps(document, ensure_ascii=rng.random() < 0.5).encode()
        for chunk in (1, 2, 3, 7, 1 << 20):  # state carried over chunk ends: inside a string, after backslashes
            assert validation.nesting(text, chunk) == json_depth(document), (text, chunk)
    assert validation.nesting(b"[" * 5000 + b"]" * 5000) == 5000
    assert validation.nesting(b'["' + b"[" * 5000 + b'"]') == 1
    assert validation.nesting(b'"\\"' + b"[" * 10) == 0  # an escaped quote does not end the string


def image_bytes(size: tuple[int, int], kind: str) -> bytes:
    encoded = io.BytesIO()
    Image.new("RGB", size, (200, 30, 90)).save(encoded, kind)
    return encoded.getvalue()


def test_thumbnails_are_decoded_and_stored_as_jpeg_or_refused():
    for kind in ("PNG", "JPEG"):
        stored = validation.thumbnail(image_bytes((40, 30), kind))
        with Image.open(io.BytesIO(stored)) as image:
            assert (image.format, image.size, image.getpixel((5, 5))[0] // 10) == ("JPEG", (40, 30), 20)
    assert validation.thumbnail(None) is None
    refused("invalid_thumbnail", validation.thumbnail, b"<script>alert(1)</script>")
    refused("invalid_thumbnail", validation.thumbnail, b"\xff\xd8 not really a jpeg")
    refused("invalid_thumbnail", validation.thumbnail, image_bytes((20, 20), "GIF"))
    refused("invalid_thumbnail", validation.thumbnail, image_bytes((300, 20), "PNG"))  # over 256 pixels a side
    refused("invalid_thumbnail", validation.thumbnail, b"\x89PNG" + bytes(300_000))  # over 256 KiB
    refused("invalid_request", validation.thumbnail, "text")


def test_an_enrolment_thumbnail_of_noise_at_the_largest_side_stays_within_the_byte_bound():
    """The worst case for JPEG: a photo of noise, its face box large enough that the thumbnail is made at
    THUMBNAIL_SIDE; what is stored stays far below MAX_THUMBNAIL_BYTES."""
    noise = np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8)
    made, frame = _thumbnail(noise, (250, 250, 650, 650))
    stored = validation.thumbnail(made)
    with Image.open(io.BytesIO(stored)) as image:
        assert image.size == (THUMBNAIL_SIDE, THUMBNAIL_SIDE) == (validation.MAX_THUMBNAIL_SIDE,) * 2
    assert (frame.x1, frame.y1, frame.scale) == (50, 50, THUMBNAIL_SIDE / 800)
    assert len(stored) < validation.MAX_THUMBNAIL_BYTES / 2, len(stored)


def test_a_thumbnail_frame_needs_its_thumbnail_finite_numbers_no_enlarging_and_the_box_on_it():
    thumbnail = validation.thumbnail(image_bytes((40, 30), "PNG"))
    box = (10.0, 20.0, 50.0, 60.0)
    assert validation.thumbnail_frame(None, box, thumbnail) is None
    assert validation.thumbnail_frame(ThumbnailFrame(0, 10, 0.5), box, thumbnail) == ThumbnailFrame(0.0, 10.0, 0.5)
    assert ThumbnailFrame(0, 10, 0.5).inside(box) == (5.0, 5.0, 25.0, 25.0)
    refused("invalid_thumbnail", validation.thumbnail_frame, ThumbnailFrame(0, 10, 0.5), box, None)
    refused("invalid_thumbnail", validation.thumbnail_frame, (0, 10, 0.5), box, thumbnail)
    for x1, y1, scale in ((0, 0, 1.5), (0, 0, 0), (0, 0, -1), (np.nan, 0, 1), (0, np.inf, 1), (0, 0, True),
                          ("0", 0, 1), (10 ** 400, 0, 1), (0, 0, None)):
        refused("invalid_thumbnail", validation.thumbnail_frame, ThumbnailFrame(x1, y1, scale), box, thumbnail)
    for off in (ThumbnailFrame(50, 0, 1), ThumbnailFrame(0, 60, 1), ThumbnailFrame(-300, 0, 1)):
        assert "outside its 40x30 thumbnail" in refused("invalid_thumbnail", validation.thumbnail_frame, off, box,
                                                       thumbnail)
