"""URL fetching against local servers on 127.0.0.1: address checks, rebinding, redirects, time/byte caps, content."""

from __future__ import annotations

import asyncio
import asyncio.base_events
import ipaddress
import socket
import time

import httpcore
import pytest

from faceserve.http.urlfetch import (EMBEDDED_IPV4, SPECIAL_PURPOSE, InvalidUrl, UrlFetcher, UrlFetchFailed, UrlForbidden,
                                UrlNotImage, UrlTimeout, UrlTooLarge, is_public)
from tests.hostile_corpus import _Handler, good_jpeg, image_server

LOCAL = ["127.0.0.1/32"]


@pytest.fixture(scope="module")
def port():
    with image_server() as port:
        yield port


def fetch(url: str, **options) -> bytes:
    return asyncio.run(UrlFetcher(**options)(url))


# One address in every IANA special-purpose range (and the other non-unicast blocks), written out
# here rather than read from the module's table, so a range dropped from the table fails a case.
REFUSED = [
    "0.0.0.0", "0.1.2.3", "10.255.255.255", "100.64.0.1", "100.127.255.254", "127.0.0.1", "127.255.0.1",
    "169.254.169.254", "172.16.0.1", "172.31.255.255", "192.0.0.1", "192.0.0.9", "192.0.0.171", "192.0.0.255",
    "192.0.2.1", "192.31.196.1", "192.52.193.1", "192.88.99.1", "192.168.1.1", "192.175.48.1", "198.18.0.1",
    "198.19.255.254", "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.255.255.250", "240.0.0.1",
    "255.255.255.254", "255.255.255.255",
    "::", "::1", "::127.0.0.1", "::ffff:127.0.0.1", "::ffff:169.254.169.254", "::ffff:10.0.0.1",
    "64:ff9b::a9fe:a9fe", "64:ff9b::7f00:1", "64:ff9b:1::808:808", "100::1", "100:0:0:1::1",
    "2001::1", "2001:0:4136:e378:8000:63bf:f7f7:f7f7", "2001:1::1", "2001:2::1", "2001:3::1", "2001:4:112::1",
    "2001:10::1", "2001:20::1", "2001:30::1", "2001:1ff:ffff::1", "2001:db8::1", "2001:db8:ffff::1",
    "2002:7f00:1::", "2002:a00:1::1", "2002:a9fe:a9fe::", "2620:4f:8000::1", "3fff::1", "5f00::1", "4000::1",
    "fc00::1", "fd12:3456::1", "fe80::1", "febf::1", "fec0::1", "feff::1", "ff02::1", "ff0e::1",
]
ACCEPTED = ["8.8.8.8", "1.1.1.1", "93.184.216.34", "100.128.0.1", "198.20.0.1", "192.0.3.1", "223.255.255.254",
            "2606:4700:4700::1111", "2001:4860:4860::8888", "2a00:1450:4001::1",
            "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"]  # the IPv4 address inside decides


@pytest.mark.parametrize("address", REFUSED)
def test_special_purpose_addresses_refused(address):
    assert is_public(ipaddress.ip_address(address)) is False


@pytest.mark.parametrize("address", ACCEPTED)
def test_public_addresses_accepted(address):
    assert is_public(ipaddress.ip_address(address)) is True


@pytest.mark.parametrize("network", [n for n, _ in SPECIAL_PURPOSE], ids=str)
def test_every_table_entry_refused_at_both_ends(network):
    net = ipaddress.ip_network(network)
    if net in EMBEDDED_IPV4:  # judged by the IPv4 address they carry
        private, public = ipaddress.IPv4Address("10.0.0.1"), ipaddress.IPv4Address("8.8.8.8")
        assert (is_public(embed(net, private)), is_public(embed(net, public))) == (False, True)
    else:
        assert not is_public(net.network_address) and not is_public(net.broadcast_address)


def embed(prefix: ipaddress.IPv6Network, v4: ipaddress.IPv4Address) -> ipaddress.IPv6Address:
    shift = 80 if prefix == ipaddress.ip_network("2002::/16") else 0  # 6to4: right after the /16
    return ipaddress.IPv6Address(int(prefix.network_address) | int(v4) << shift)


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


def streamed_before_hang_up(path: str, call) -> int:
    _Handler.streamed.pop(path, None)
    call()
    while path not in _Handler.streamed:  # the server notices the hang-up at its next write
        time.sleep(0.05)
    return _Handler.streamed[path]


def test_trickling_server_cut_off_at_time_limit(port):
    """A 60 s trickle (300 bytes, one every 0.2 s) against a 1 s deadline: the fetch gives up and hangs up."""
    def trickle():
        with pytest.raises(UrlTimeout) as caught:
            fetch(f"http://127.0.0.1:{port}/trickle", allowlist=LOCAL, timeout_s=1.0)
        assert caught.value.code == "url_timeout" and 400 <= caught.value.status < 500
    assert streamed_before_hang_up("/trickle", trickle) < 300


def test_huge_bodies_cut_off_at_byte_limit(port):
    def huge():
        with pytest.raises(UrlTooLarge):
            fetch(f"http://127.0.0.1:{port}/huge", allowlist=LOCAL, max_bytes=1_000_000)
    assert streamed_before_hang_up("/huge", huge) < 64 * 2**20  # the 64 MiB stream was cut, not read whole
    with pytest.raises(UrlTooLarge) as caught:
        fetch(f"http://127.0.0.1:{port}/huge-declared", allowlist=LOCAL, max_bytes=1_000_000)
    assert caught.value.status == 413


def test_non_image_response_refused(port):
    with pytest.raises(UrlNotImage) as caught:
        fetch(f"http://127.0.0.1:{port}/page.html", allowlist=LOCAL)
    assert caught.value.status == 415
    with pytest.raises(UrlFetchFailed):
        fetch(f"http://127.0.0.1:{port}/error", allowlist=LOCAL)


PUBLIC = "93.184.216.34"


@pytest.fixture
def flipping_dns(monkeypatch):
    """A DNS stub for `flip.test` that answers a public address first and 127.0.0.1 on every later
    lookup (a rebinding name), counting lookups; and a network where the public address leads to
    the local test server, recording the addresses connections were opened to."""
    real_lookup = asyncio.base_events.BaseEventLoop.getaddrinfo
    real_connect = httpcore.AnyIOBackend.connect_tcp
    seen = {"lookups": 0, "connects": []}

    async def getaddrinfo(self, host, port_, *args, **kwargs):
        if host not in ("flip.test", b"flip.test"):  # anyio asks with the IDNA-encoded bytes
            return await real_lookup(self, host, port_, *args, **kwargs)
        seen["lookups"] += 1
        ip = PUBLIC if seen["lookups"] == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port_))]

    async def connect_tcp(self, host, port_, *args, **kwargs):
        seen["connects"].append(host)
        return await real_connect(self, "127.0.0.1" if host == PUBLIC else host, port_, *args, **kwargs)

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(httpcore.AnyIOBackend, "connect_tcp", connect_tcp)
    _Handler.hosts_seen.clear()
    return seen


def test_one_lookup_per_connection_and_only_the_checked_address_is_dialled(port, flipping_dns):
    """The name is resolved once, checked, and the socket goes to that address (the request still
    names the host, as TLS SNI would); the next connection resolves again, gets the private
    answer and is refused without dialling."""
    assert fetch(f"http://flip.test:{port}/face.jpg") == good_jpeg()
    assert flipping_dns == {"lookups": 1, "connects": [PUBLIC]}
    assert _Handler.hosts_seen == [f"flip.test:{port}"]
    with pytest.raises(UrlForbidden, match="127.0.0.1"):
        fetch(f"http://flip.test:{port}/face.jpg")
    assert flipping_dns == {"lookups": 2, "connects": [PUBLIC]}


def test_redirect_to_a_rebound_name_is_refused(port, flipping_dns):
    """A redirect is a new connection: one more lookup, and its private answer is refused."""
    with pytest.raises(UrlForbidden):
        fetch(f"http://flip.test:{port}/redirect?to=/face.jpg")
    assert flipping_dns == {"lookups": 2, "connects": [PUBLIC]}
    assert _Handler.hosts_seen == [f"flip.test:{port}"]


def test_one_private_answer_among_public_ones_is_refused(port, monkeypatch):
    real = asyncio.base_events.BaseEventLoop.getaddrinfo

    async def getaddrinfo(self, host, port_, *args, **kwargs):
        if host == "mixed.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port_)) for ip in (PUBLIC, "127.0.0.1")]
        return await real(self, host, port_, *args, **kwargs)

    monkeypatch.setattr(asyncio.base_events.BaseEventLoop, "getaddrinfo", getaddrinfo)
    with pytest.raises(UrlForbidden):
        fetch(f"http://mixed.test:{port}/face.jpg", allowlist=[])
