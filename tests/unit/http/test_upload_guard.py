"""faceserve/http/upload_guard.py alone, as an ASGI app, no server: every hostile request shape of
tests/hostile_requests.py is either refused by the guard with its exact code, or handed on, byte for byte, to the
endpoint whose own refusal it is (tests/integration/test_request_shapes.py sends the same shapes to the service)."""

from __future__ import annotations

import asyncio

import pytest

from faceserve.http.upload_guard import UploadGuardMiddleware
from tests.hostile_requests import AMBIGUOUS, CHARSET, ENCODING, MULTIPART, Shape, multipart, part, shapes
from tests.support import post_through

URL = "http://127.0.0.1:9/face.png"
# The shapes the guard hands on: JSON bodies that are not a bare URL, and a real file part whose bytes are a URL;
# the endpoint refuses them (`expect`), and nothing in them can make the framework download.
ENDPOINT_REFUSES = {
    "multipart, the URL as the bytes of a file part", "JSON image holding a URL", "JSON image holding a URL list",
    "JSON image_base64 holding a URL", "JSON image_url with URL fetching off", "JSON images list of URLs",
    "JSON images_base64 holding a URL", "URL in the query string, empty JSON body",
}
SHAPES = shapes(URL)


def through_guard(shape: Shape):
    chunks = [shape.body[:7], shape.body[7:]] if shape.chunked else [shape.body]
    headers = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in shape.headers]
    return post_through(UploadGuardMiddleware, f"/{shape.endpoint}", headers, chunks)


@pytest.mark.parametrize("shape", SHAPES, ids=[s.label for s in SHAPES])
def test_each_shape_is_refused_by_the_guard_or_handed_on_unchanged(shape):
    answer = through_guard(shape)
    if shape.name in ENDPOINT_REFUSES:
        assert (answer.status, answer.reached) == (None, [shape.body])
    else:
        assert answer.reached == []
        assert (answer.status, answer.body["error"]) == shape.expect
        assert set(answer.body) == {"error", "message"} and len(answer.body["message"]) > 20, answer.body


def test_the_guards_own_refusals_cover_every_code_it_answers():
    codes = {through_guard(s).body["error"] for s in SHAPES if s.name not in ENDPOINT_REFUSES}
    assert codes == {AMBIGUOUS[1], CHARSET[1], ENCODING[1], "invalid_request"}
    assert ENDPOINT_REFUSES <= {s.name for s in SHAPES}


def test_a_form_with_file_parts_passes_with_its_bytes_and_the_rest_of_the_request_untouched():
    body = multipart(part('form-data; name="image"; filename="a.png"', b"\x89PNG\r\n\x1a\n", "Content-Type: image/png"),
                     part('form-data; name="detector"', b"blazeface"))
    answer = post_through(UploadGuardMiddleware, "/analyze", [(b"content-type", MULTIPART.encode())],
                          [body[:10], body[10:]])
    assert (answer.status, answer.reached) == (None, [body])


def test_text_in_a_field_named_as_a_file_field_is_refused_only_for_those_fields():
    body = multipart(part('form-data; name="archive"', URL.encode()))
    headers = [(b"content-type", MULTIPART.encode())]
    answer = post_through(lambda app: UploadGuardMiddleware(app, file_fields=("archive",)), "/jobs/submit", headers,
                          [body])
    assert (answer.status, answer.body["error"], answer.reached) == (400, "invalid_request", [])
    assert answer.body["message"].startswith("the `archive` field must be a file upload, not text")
    assert post_through(UploadGuardMiddleware, "/jobs/submit", headers, [body]).reached == [body]


def test_only_posts_are_read():
    reached = []

    async def app(scope, receive, send):
        reached.append(scope["method"])

    async def receive():
        raise AssertionError("the guard read the body of a GET")

    asyncio.run(UploadGuardMiddleware(app)({"type": "http", "method": "GET", "path": "/jobs", "headers": []},
                                           receive, None))
    assert reached == ["GET"]
