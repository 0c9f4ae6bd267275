"""No request shape makes the service download a URL, unless it is an allowed `image_url`; /metrics stays bounded.

A hit counter on 127.0.0.1 stands for every URL in the shapes (tests/hostile_requests.py)
and is also the HTTP proxy the service is told to use, so a download by BentoML's own
fetcher reaches it whichever way it goes (BentoML's address check blocks 127.0.0.1
but lets proxies through).
"""

from __future__ import annotations

import asyncio
import re
import uuid
from pathlib import Path
from typing import Annotated

import httpx
import pytest
from bentoml.validators import ContentType
from starlette.requests import Request

from faceserve.dev import photos
from faceserve.http.routes import ANY_KEY, PUBLIC, ROUTES
from tests.hostile_requests import MULTIPART, HitCounter, multipart, part, send, shapes
from tests.support import png, serve

ImageFile = Annotated[Path, ContentType("image/*")]
API_ROUTES = {path for path, route in ROUTES.items() if route.scope not in (PUBLIC, ANY_KEY)}


@pytest.fixture(scope="module")
def counter():
    with HitCounter(png(photos.astronaut())).running() as running:
        yield running


def through(counter: HitCounter) -> dict[str, str]:
    """Service environment: one worker, every outgoing HTTP(S) request proxied to the counter, no usage
    tracking (BentoML's would be counted too)."""
    proxy = {name: counter.url for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")}
    return {"FACESERVE_WORKERS": "1", "BENTOML_DO_NOT_TRACK": "True", **proxy, "NO_PROXY": "", "no_proxy": ""}


@pytest.fixture(scope="module")
def closed(repository, counter, tmp_path_factory):
    """URL fetching off (the default). Its own BENTOML_HOME: each `bentoml serve` empties the metrics
    directory under it, and other servers start while this one runs."""
    home = tmp_path_factory.mktemp("bentoml_home")
    with serve({**through(counter), "BENTOML_HOME": str(home)}) as url:
        yield url


def answers(url: str, counter: HitCounter, only) -> list[tuple]:
    """(shape, expected, answer, hits it caused) for every shape answered otherwise than expected."""
    wrong = []
    for shape in filter(only, shapes(f"{counter.url}/face.png")):
        before = counter.hits
        status, body = send(url, shape)
        got = (status, body.get("error") if isinstance(body, dict) else body)
        shaped = isinstance(body, dict) and set(body) == {"error", "message"} and body["message"]
        if got != shape.expected or not shaped or counter.hits != before:
            wrong.append((shape.label, shape.expected, got, counter.hits - before))
    return wrong


def test_no_shape_reaches_a_downloader(closed, counter):
    wrong = answers(closed, counter, lambda shape: True)
    assert [w for w in wrong if w[3]] == []  # downloads first: they are the hole
    assert wrong == []
    assert counter.hits == 0, counter.requests
    assert httpx.get(f"{closed}/readyz", timeout=10).status_code == 200  # and still serving afterwards
    good = httpx.post(f"{closed}/analyze", files={"image": ("a.png", png(photos.astronaut()), "image/png")},
                      timeout=60)
    assert good.status_code == 200 and [f["emotion"]["label"] for f in good.json()["faces"]] == ["happy"]


def test_allowed_image_url_is_the_only_fetch(repository, counter):
    env = {**through(counter), "FACESERVE_URL_FETCH": "1", "FACESERVE_URL_ALLOWLIST": "127.0.0.1"}
    with serve(env) as url:
        start = counter.hits
        response = httpx.post(f"{url}/analyze", json={"image_url": f"{counter.url}/face.png"}, timeout=60)
        assert response.status_code == 200 and len(response.json()["faces"]) == 1
        assert counter.hits == start + 1  # the counter is reachable: zero hits elsewhere mean something
        wrong = answers(url, counter, lambda shape: not shape.uses_image_url)
        assert wrong == []
        assert counter.hits == start + 1, counter.requests


def test_bentoml_serdes_never_download(counter, monkeypatch, tmp_path):
    """At the source: BentoML's request parsers, as the service runs them, never download a URL."""
    import bentoml  # noqa: F401  (before BentoML's private modules, as in a service)
    from _bentoml_impl.serde import ALL_SERDE
    from _bentoml_sdk.io_models import IODescriptor
    from bentoml._internal import context
    from bentoml.exceptions import BadInput

    from faceserve.http.framework import close_framework_downloads

    close_framework_downloads()
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(name, counter.url)
    monkeypatch.setattr(context, "request_temp_dir", lambda: str(tmp_path))  # no server request around us
    url = f"{counter.url}/face.png"

    async def parse(media_type: str, body: bytes, function):
        async def receive():
            return {"type": "http.request", "body": body, "more_body": False}
        content_type = MULTIPART if media_type == "multipart/form-data" else media_type
        request = Request({"type": "http", "method": "POST", "path": "/", "query_string": b"",
                           "headers": [(b"content-type", content_type.encode())]}, receive)
        return await ALL_SERDE[media_type]().parse_request(request, IODescriptor.from_input(function))

    start = counter.hits
    for media_type, body in [("multipart/form-data", multipart(part('form-data; name="image"', url.encode()))),
                             ("application/x-www-form-urlencoded", f"image={url}".encode())]:
        with pytest.raises(BadInput, match="file field holds text"):
            try:
                asyncio.run(parse(media_type, body, _fields))
            finally:
                assert counter.hits == start, f"{media_type}: {counter.requests}"
    # A one-file endpoint takes a JSON body as the file's bytes; a URL stays those bytes.
    parsed = asyncio.run(parse("application/json", url.encode(), _root))
    assert parsed.root.read_bytes() == url.encode()
    assert counter.hits == start, counter.requests


def _fields(image: ImageFile = None, detector: str = "blazeface"): ...


def _root(image: ImageFile, /): ...  # a positional-only file: BentoML's "root input"


def endpoint_labels(metrics: str) -> set[str]:
    return set(re.findall(r'endpoint="([^"]*)"', metrics))


def test_metrics_labels_stay_bounded(closed):
    paths = [f"/{uuid.uuid4().hex}" for _ in range(100)] + [f"/static_content/{uuid.uuid4().hex}.js" for _ in range(20)]
    with httpx.Client(base_url=closed, timeout=30) as client:
        for path in paths:
            assert client.get(path).status_code == 404
        assert client.post("/analyze", json={}).json()["error"] == "missing_image"
        # labelled "/static_content", served from its real path
        asset = client.get("/static_content/index.css")
        assert asset.status_code == 200 and asset.headers["content-type"].startswith("text/css")
        labels = endpoint_labels(client.get("/metrics").text)
    assert not labels & set(paths)
    assert {"/analyze", "/static_content", "other"} <= labels
    assert labels - API_ROUTES <= {"/", "/docs.json", "/schema.json", "/readyz", "/livez", "/healthz", "/metrics",
                                   "/static_content", "/assets", "other"}, sorted(labels)
