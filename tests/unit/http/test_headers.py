"""Security headers on every answer, whoever wrote it; the page's CSP allows only what the page uses."""

from __future__ import annotations

import asyncio
import re

import pytest

from faceserve.http.headers import API_CSP, DOCS_CSP, PAGE_CSP, SecurityHeadersMiddleware
from faceserve.web import STATIC


def answer_headers(path: str, app_headers: list) -> dict[bytes, bytes]:
    sent = []

    async def app(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": app_headers})
        await send({"type": "http.response.body", "body": b""})

    async def send(message):
        sent.append(message)

    asyncio.run(SecurityHeadersMiddleware(app)({"type": "http", "path": path}, None, send))
    return dict(sent[0]["headers"])


@pytest.mark.parametrize("path, policy", [("/", PAGE_CSP), ("/web/app.js", PAGE_CSP), ("/docs", DOCS_CSP),
                                          ("/static_content/swagger-ui.css", DOCS_CSP), ("/analyze", API_CSP),
                                          ("/identities/face_thumbnail", API_CSP)])
def test_every_answer_carries_the_headers(path, policy):
    headers = answer_headers(path, [(b"content-type", b"text/html"), (b"x-frame-options", b"SAMEORIGIN")])
    assert headers[b"x-content-type-options"] == b"nosniff" and headers[b"x-frame-options"] == b"DENY"
    assert headers[b"referrer-policy"] == b"no-referrer" and headers[b"content-type"] == b"text/html"
    assert headers[b"content-security-policy"] == policy.encode() and b"frame-ancestors 'none'" in headers[
        b"content-security-policy"]


def test_the_page_needs_no_inline_script_style_or_foreign_source():
    """What PAGE_CSP forbids is absent from the page: inline scripts, style attributes or elements, handlers."""
    for path in STATIC.glob("*.html"):
        if path.name == "docs.html":
            continue  # Swagger's page: DOCS_CSP
        html = path.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
        assert not re.search(r"<style|\sstyle=|\son[a-z]+=", html), path
        assert not re.search(r"(src|href)=\"(https?:)?//", html), path
    for path in STATIC.glob("*.js"):
        assert not re.search(r"\beval\(|new Function|innerHTML\s*=|https?://(?!example\.com)", path.read_text()), path
