"""API keys without a server: constant-time comparison against every key, header parsing."""

from __future__ import annotations

from faceserve.http import is_public
from faceserve.http.auth import ApiKeyMiddleware, presented_key


def test_constant_time_compare_and_header_parsing():
    middleware = ApiKeyMiddleware(app=None, keys=["k1", "k2"])
    assert middleware.accepts(b"k1") and middleware.accepts(b"k2")
    assert not middleware.accepts(b"k") and not middleware.accepts(b"k1 ") and not middleware.accepts(None)
    assert presented_key([(b"authorization", b"Bearer abc")]) == b"abc"
    assert presented_key([(b"x-api-key", b" abc ")]) == b"abc"
    assert presented_key([(b"authorization", b"Token abc")]) is None


def test_only_health_metrics_and_the_page_files_need_no_key():
    for path in ("/readyz", "/metrics", "/", "/web/app.js", "/web/style.css"):
        assert is_public(path), path
    for path in ("/analyze", "/models", "/docs", "/docs.json", "/features", "/web/../docs.json", "/webx/app.js"):
        assert not is_public(path), path
