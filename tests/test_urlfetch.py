"""URL fetching against local servers on 127.0.0.1: address checks, rebinding, redirects, time/byte caps, content."""

from __future__ import annotations

import asyncio
import asyncio.base_events
import ipaddress
import socket
import time

import pytest

from faceserve.urlfetch import (InvalidUrl, UrlFetcher, UrlFetchFailed, UrlForbidden, UrlNotImage, UrlTimeout,
                                UrlTooLarge, is_public)
from tests.hostile_corpus import _Handler, good_jpeg, image_server

LOCAL = ["127.0.0.1/32"]


@pytest.fixture(scope="module")
def port():
    with image_server() as port:
        yield port


def fetch(url: str, **options) -> bytes:
    return asyncio.run(UrlFetcher(**options)(url))


@pytest.mark.parametrize("address,public", [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True),
    ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False), ("192.168.1.1", False),
    ("169.254.169.254", False), ("0.0.0.0", False), ("224.0.0.1", False), ("255.255.255.255", False),
    ("100.64.0.1", False), ("::1", False), ("::", False), ("fe80::1", False), ("fc00::1", False),
    ("ff02::1", False), ("::ffff:127.0.0.1", False), ("::ffff:169.254.169.254", False),
    ("::ffff:10.0.0.1", False), ("2002:7f00:1::", False), ("64:ff9b::a9fe:a9fe", False),
])
def test_public_addresses(address, public):
    assert is_public(ipaddress.ip_address(address)) is public


@pytest.mark.parametrize("target", [
    "http://127.0.0.1:{port}/face.jpg", "http://localhost:{port}/face.jpg", "http://[::1]:{port}/face.jpg",
    "http://[::ffff:127.0.0.1]:{port}/face.jpg", "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/a.jpg", "http://192.168.0.1/a.jpg", "http://0.0.0.0:{port}/face.jpg",
    "http://[fe80::1]/a.jpg", "http://224.0.0.1/a.jpg", "http://2130706433:{port}/face.jpg",
])
def test_private_targets_refused_when_not_allowlisted(port, target):
    with pytest.raises(UrlForbidden) as caught:
        fetch(target.format(port=port))
    assert caught.value.status == 403 and caught.value.code == "url_forbidden"


def test_allowlisted_local_server_is_fetched(port):
    assert fetch(f"http://127.0.0.1:{port}/face.jpg", allowlist=LOCAL) == good_jpeg()
    assert fetch(f"http://localhost:{port}/face.jpg", allowlist=["localhost"]) == good_jpeg()


def test_allowlist_is_exact(port):
    with pytest.raises(UrlForbidden):  # 127.0.0.1/32 does not cover ::1 nor 127.0.0.2
        fetch(f"http://[::1]:{port}/face.jpg", allowlist=LOCAL)
    with pytest.raises(UrlForbidden):
        fetch(f"http://127.0.0.2:{port}/face.jpg", allowlist=LOCAL)


@pytest.mark.parametrize("target", ["http://169.254.169.254/latest/meta-data/", "http://10.0.0.1/a.jpg",
                                    "http://[::1]:{port}/face.jpg", "http://[::ffff:a9fe:a9fe]/"])
def test_redirect_to_private_refused(port, target):
    with pytest.raises(UrlForbidden):
        fetch(f"http://127.0.0.1:{port}/redirect?to={target.format(port=port)}", allowlist=LOCAL)


def test_redirects_rechecked_capped_and_schemes(port):
    assert fetch(f"http://127.0.0.1:{port}/redirect?to=/face.jpg", allowlist=LOCAL) == good_jpeg()
    with pytest.raises(UrlFetchFailed) as caught:
        fetch(f"http://127.0.0.1:{port}/loop", allowlist=LOCAL, max_redirects=3)
    assert caught.value.code == "url_too_many_redirects"
    with pytest.raises(InvalidUrl):
        fetch(f"http://127.0.0.1:{port}/redirect?to=file:///etc/passwd", allowlist=LOCAL)


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://example.com/a.jpg", "gopher://x/", "/relative.jpg",
                                 "http://user:pw@example.com/a.jpg", "http://", "not a url"])
def test_bad_urls(url):
    with pytest.raises(InvalidUrl) as caught:
        fetch(url)
    assert caught.value.status == 400


def test_trickling_server_cut_off_at_time_limit(port):
    started = time.monotonic()
    with pytest.raises(UrlTimeout) as caught:
        fetch(f"http://127.0.0.1:{port}/trickle", allowlist=LOCAL, timeout_s=1.0)
    assert time.monotonic() - started < 2.5
    assert caught.value.code == "url_timeout" and 400 <= caught.value.status < 500


def test_huge_bodies_cut_off_at_byte_limit(port):
    started = time.monotonic()
    with pytest.raises(UrlTooLarge):
        fetch(f"http://127.0.0.1:{port}/huge", allowlist=LOCAL, max_bytes=1_000_000)
    with pytest.raises(UrlTooLarge) as caught:
        fetch(f"http://127.0.0.1:{port}/huge-declared", allowlist=LOCAL, max_bytes=1_000_000)
    assert caught.value.status == 413
    assert time.monotonic() - started < 5


def test_non_image_response_refused(port):
    with pytest.raises(UrlNotImage) as caught:
        fetch(f"http://127.0.0.1:{port}/page.html", allowlist=LOCAL)
    assert caught.value.status == 415
    with pytest.raises(UrlFetchFailed):
        fetch(f"http://127.0.0.1:{port}/error", allowlist=LOCAL)


def test_connects_to_the_checked_address_keeping_the_host(port, monkeypatch):
    """Resolution happens once, in our backend: the socket goes to the address that was checked,
    and the request still names the original host (as TLS SNI would)."""
    real = asyncio.base_events.BaseEventLoop.getaddrinfo
    answers = {"rebind.test": ["127.0.0.1"], "mixed.test": ["93.184.216.34", "127.0.0.1"]}

    async def fake_getaddrinfo(self, host, port_, *args, **kwargs):
        if host in answers:
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port_)) for ip in answers[host]]
        return await real(self, host, port_, *args, **kwargs)

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", fake_getaddrinfo)
    _Handler.hosts_seen.clear()
    assert fetch(f"http://rebind.test:{port}/face.jpg", allowlist=LOCAL) == good_jpeg()
    assert _Handler.hosts_seen == [f"rebind.test:{port}"]
    with pytest.raises(UrlForbidden):  # one private answer among public ones is enough to refuse
        fetch(f"http://mixed.test:{port}/face.jpg", allowlist=[])
