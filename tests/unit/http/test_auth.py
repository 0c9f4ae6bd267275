"""The access middleware without a server: a tiny ASGI app behind it, requests as raw ASGI scopes."""

from __future__ import annotations

import asyncio
import json

import pytest

from faceserve.http.auth import AccessMiddleware, HostAllowlist, host_name, presented_key
from faceserve.http.caller import ADMIN, ANALYZE, CALLER, ENROL, SCOPES, Caller
from faceserve.http.keys import ApiKey, digest, find_key, legacy_key
from faceserve.http.routes import ROUTES, is_public, route_of

ANALYZE_KEY, ADMIN_KEY = "fs_analyze-only", "fs_admin"
KEYS = (ApiKey("reader", frozenset({ANALYZE}), digest(ANALYZE_KEY)), ApiKey("boss", frozenset(SCOPES), digest(ADMIN_KEY)))
DEFAULT_HOSTS = HostAllowlist.of((), "127.0.0.1")


def request(middleware, path: str, *, method: str = "POST", headers: dict | None = None, client="127.0.0.1",
            server=("127.0.0.1", 3000), body: bytes = b""):
    """The answer (status, JSON body) and the Caller the app saw (None when refused before it)."""
    seen = {}

    async def app(scope, receive, send):
        seen["caller"] = scope[CALLER]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    middleware.app = app
    raw = [(name.lower().encode(), value.encode()) for name, value in (headers or {}).items()]
    if body:
        raw.append((b"content-length", str(len(body)).encode()))
    scope = {"type": "http", "method": method, "path": path, "headers": raw, "client": (client, 50000),
             "server": server}
    sent = []

    async def receive():
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message):
        sent.append(message)

    asyncio.run(middleware(scope, receive, send))
    status = sent[0]["status"]
    return status, json.loads(sent[1]["body"] or b"{}"), seen.get("caller")


def keyless(hosts=DEFAULT_HOSTS):
    return AccessMiddleware(None, keys=(), hosts=hosts)


def keyed(hosts=None):
    return AccessMiddleware(None, keys=KEYS, hosts=hosts)


JSON_BODY = {"content-type": "application/json", "host": "127.0.0.1:3000"}


def test_key_headers_and_constant_time_lookup():
    assert presented_key([(b"authorization", b"Bearer abc")]) == b"abc"
    assert presented_key([(b"x-api-key", b" abc ")]) == b"abc"
    assert presented_key([(b"authorization", b"Token abc")]) is None
    assert find_key(KEYS, ANALYZE_KEY.encode()).id == "reader" and find_key(KEYS, b"fs_admin ") is None
    legacy = legacy_key("plain")
    assert legacy.scopes == frozenset(SCOPES) and legacy.id == digest("plain").hex()[:12]


def test_only_health_metrics_and_the_page_files_need_no_key():
    for path in ("/readyz", "/metrics", "/", "/docs", "/web/app.js", "/static_content/swagger-ui.css"):
        assert is_public(path), path
    for path in ("/analyze", "/models", "/docs.json", "/features", "/web/../docs.json", "/webx/app.js", "/nope"):
        assert not is_public(path), path
    assert route_of("/nope") is None and route_of("/web/../gallery/export") is None


def test_an_undeclared_path_is_refused_even_keyless():
    assert request(keyless(), "/secret_route", headers=JSON_BODY)[:2] == (
        404, {"error": "not_found", "message": "no route /secret_route"})


@pytest.mark.parametrize("path", [p for p, r in ROUTES.items() if r.scope in SCOPES])
def test_route_by_route_a_key_without_the_scope_is_403_and_one_with_it_passes(path):
    scope = ROUTES[path].scope
    narrow = {ANALYZE: ENROL, ENROL: ANALYZE, ADMIN: ANALYZE}[scope]
    middleware = AccessMiddleware(None, keys=(ApiKey("narrow", frozenset({narrow}), digest("n")), *KEYS), hosts=None)
    status, body, caller = request(middleware, path, headers={**JSON_BODY, "x-api-key": "n"}, body=b"{}")
    assert (status, body["error"], caller) == (403, "missing_scope", None)
    assert f"`{scope}` scope" in body["message"] and "`narrow` has" in body["message"]
    status, _, caller = request(middleware, path, headers={**JSON_BODY, "authorization": f"Bearer {ADMIN_KEY}"},
                                body=b"{}")
    assert status == 200 and caller == Caller(address="127.0.0.1", key_id="boss", scopes=frozenset(SCOPES))


def test_every_route_with_an_identify_flag_needs_the_scope_identify_needs():
    """`/analyze`, `/analyze_batch` and a job answer who each face is with `identify`: no narrower than `/identify`."""
    from faceserve.settings import JOBS_SUBMIT_ROUTE

    assert {ROUTES[path].scope for path in ("/identify", "/analyze", "/analyze_batch", JOBS_SUBMIT_ROUTE)} == {ANALYZE}


def test_missing_or_wrong_key_is_401_and_public_paths_need_none():
    status, body, _ = request(keyed(), "/analyze", headers=JSON_BODY)
    assert (status, body["error"]) == (401, "unauthorized") and "API key is required" in body["message"]
    status, body, _ = request(keyed(), "/analyze", headers={**JSON_BODY, "x-api-key": "wrong"})
    assert (status, body["message"]) == (401, "the API key is not valid")
    status, _, caller = request(keyed(), "/readyz", method="GET")
    assert status == 200 and caller.key_id is None and caller.scopes == frozenset()
    status, _, caller = request(keyed(), "/docs.json", method="GET", headers={"x-api-key": ANALYZE_KEY})
    assert status == 200 and caller.key_id == "reader"  # any key describes the API


def test_keyless_callers_have_every_scope_but_admin_answers_loopback_only():
    status, _, caller = request(keyless(), "/identities/create", headers=JSON_BODY, client="10.1.2.3", body=b"{}")
    assert status == 200 and caller == Caller(address="10.1.2.3")
    status, body, caller = request(keyless(), "/gallery/export", headers=JSON_BODY, client="10.1.2.3")
    assert (status, body["error"], caller) == (403, "admin_loopback_only", None)
    for loopback in ("127.0.0.1", "::1", "127.8.0.1"):
        assert request(keyless(), "/gallery/export", headers=JSON_BODY, client=loopback)[0] == 200, loopback
    # With keys a key decides, wherever the client is.
    assert request(keyed(), "/gallery/export", headers={**JSON_BODY, "x-api-key": ADMIN_KEY},
                   client="10.1.2.3")[0] == 200


@pytest.mark.parametrize("host, allowed", [
    ("127.0.0.1:3000", True), ("localhost", True), ("LOCALHOST.:8080", True), ("[::1]:3000", True),
    ("10.0.0.7:3000", True),  # the address the connection reached (the server tuple below)
    ("rebind.evil.example:3000", False), ("127.0.0.1.nip.io", False), ("localhost.evil.example", False)])
def test_host_allowlist_defeats_dns_rebinding_on_every_route(host, allowed):
    server = ("10.0.0.7", 3000)
    for path in ("/gallery/export", "/analyze", "/", "/metrics"):
        status, body, _ = request(keyless(), path, method="GET", headers={"host": host}, server=server)
        assert (status == 200) is allowed, (path, host, body)
        if not allowed:
            assert body["error"] == "host_not_allowed" and host_name(host) in body["message"]
    assert request(keyless(), "/readyz", method="GET", headers={"host": host}, server=server)[0] == 200  # probes


def test_configured_hosts_and_wildcards_and_keys_without_a_list():
    hosts = HostAllowlist.of(("faceserve.example.com", "*.internal.example"), "0.0.0.0")
    assert hosts.allows("faceserve.example.com:443", {}) and hosts.allows("a.b.internal.example", {})
    assert not hosts.allows("internal.example.evil", {}) and not hosts.allows("0.0.0.0", {})
    assert request(keyed(), "/analyze", headers={**JSON_BODY, "host": "rebind.evil.example",
                                                 "x-api-key": ANALYZE_KEY})[0] == 200  # keys, no list: no check
    status, body, _ = request(keyed(hosts), "/analyze", headers={**JSON_BODY, "host": "rebind.evil.example",
                                                                  "x-api-key": ANALYZE_KEY})
    assert (status, body["error"]) == (403, "host_not_allowed")


@pytest.mark.parametrize("headers", [
    {"sec-fetch-site": "cross-site"}, {"sec-fetch-site": "same-site"}, {"origin": "http://evil.example"},
    {"origin": "null"}, {"origin": "http://127.0.0.1:4000"},  # another port is another origin
    {"sec-fetch-site": "cross-site", "origin": "http://127.0.0.1:3000"}])  # the browser's word wins
def test_cross_site_writes_are_refused_with_or_without_keys(headers):
    for middleware, key in ((keyless(), {}), (keyed(), {"x-api-key": ADMIN_KEY})):
        status, body, caller = request(middleware, "/identities/delete", body=b"{}",
                                       headers={**JSON_BODY, **key, **headers})
        assert (status, body["error"], caller) == (403, "cross_site_request", None)


@pytest.mark.parametrize("headers", [
    {"sec-fetch-site": "same-origin", "origin": "http://127.0.0.1:3000"}, {"sec-fetch-site": "none"},
    {"origin": "http://127.0.0.1:3000"}, {}])
def test_same_origin_and_non_browser_writes_pass(headers):
    assert request(keyless(), "/identities/delete", body=b"{}", headers={**JSON_BODY, **headers})[0] == 200


def test_cross_site_reads_of_page_files_pass():
    assert request(keyless(), "/web/app.js", method="GET", headers={"sec-fetch-site": "cross-site"})[0] == 200


@pytest.mark.parametrize("path, content_type, allowed", [
    ("/identities/create", "application/json", True),
    ("/identities/create", "application/json; charset=utf-8", True),
    ("/identities/create", "text/plain", False),  # JSON in a text/plain body: a cross-site form can send it
    ("/identities/delete", "application/x-www-form-urlencoded", False),
    ("/identities/delete", "multipart/form-data; boundary=x", False),  # no files on this route
    ("/identities/create", None, False),  # a body without a type
    ("/analyze", "multipart/form-data; boundary=x", True),
    ("/analyze", "application/x-www-form-urlencoded", False),
    ("/analyze", "image/jpeg", False),
    ("/gallery/import", "multipart/form-data; boundary=x", True)])
def test_bodies_are_json_or_forms_with_files_only(path, content_type, allowed):
    headers = {"host": "127.0.0.1:3000", **({"content-type": content_type} if content_type else {})}
    status, body, _ = request(keyless(), path, headers=headers, body=b'{"name": "x"}')
    assert (status == 200) is allowed, body
    if not allowed:
        assert (status, body["error"]) == (415, "unsupported_media_type")
        assert request(keyed(), path, headers={**headers, "x-api-key": ADMIN_KEY}, body=b"{}")[0] == 415


def test_an_empty_body_needs_no_type():
    assert request(keyless(), "/feedback/export", headers={"host": "localhost:3000"})[0] == 200
    status, body, _ = request(keyless(), "/feedback/export", headers={"host": "localhost", "content-type": "text/plain"})
    assert (status, body["error"]) == (415, "unsupported_media_type")
