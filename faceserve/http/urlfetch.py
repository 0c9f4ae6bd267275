"""Fetching an image by URL without becoming an SSRF proxy.

Off unless FACESERVE_URL_FETCH=1. Built on httpx/httpcore with one custom piece:
a network backend that resolves the host itself, refuses the connection unless
every address is public (outside every block of `SPECIAL_PURPOSE`, IANA's
special-purpose registries written out below) or allowlisted, and then connects
to the address it checked — so a DNS answer that changes between check and connect (rebinding)
cannot reach an internal address. TLS still verifies and sends SNI for the
original host name, because httpcore starts TLS with the URL's host.

Every redirect is followed by hand: its scheme is checked, its connection goes
through the same backend (so its address is re-checked), and at most
`max_redirects` are followed. The whole fetch, trickling bodies included, has one
deadline, the body has a byte cap, and the answer must say it is an image.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from dataclasses import dataclass, field
from urllib.parse import urljoin

import httpcore
import httpx

from faceserve.errors import (FaceserveError, InvalidUrl, UrlFetchFailed, UrlForbidden, UrlNotImage,  # noqa: F401
                              UrlTimeout, UrlTooLarge)

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IMAGE_TYPES = ("image/",)
GENERIC_TYPES = ("application/octet-stream", "binary/octet-stream")


@dataclass(frozen=True)
class Allowlist:
    """Hosts and networks reachable even though private (tests, a trusted intranet store)."""

    networks: tuple[IPNetwork, ...] = ()
    hosts: frozenset[str] = field(default_factory=frozenset)

    @classmethod
    def parse(cls, entries: tuple[str, ...] | list[str]) -> "Allowlist":
        networks, hosts = [], set()
        for entry in entries:
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
            except ValueError:
                hosts.add(entry.lower().rstrip("."))
        return cls(tuple(networks), frozenset(hosts))

    def allows(self, host: str, address: IPAddress) -> bool:
        return host.lower().rstrip(".") in self.hosts or any(address in net for net in self.networks
                                                              if net.version == address.version)


# Every address block that is not ordinary public unicast, from IANA's registries (the source of
# truth here, not `ipaddress` flags, which differ between Python versions):
#   https://www.iana.org/assignments/iana-ipv4-special-registry/
#   https://www.iana.org/assignments/iana-ipv6-special-registry/
#   https://www.iana.org/assignments/multicast-addresses/ and .../ipv6-multicast-addresses/
#   https://www.iana.org/assignments/ipv6-address-space/ (only 2000::/3 is global unicast)
# Entries the registries mark globally reachable (AS112, AMT, 192.0.0.9/10, ORCHIDv2...) are refused
# too: no image is served from them, and a refusal there costs nothing.
SPECIAL_PURPOSE: tuple[tuple[str, str], ...] = (
    ("0.0.0.0/8", "this network, RFC 791"),
    ("10.0.0.0/8", "private use, RFC 1918"),
    ("100.64.0.0/10", "shared address space (carrier-grade NAT), RFC 6598"),
    ("127.0.0.0/8", "loopback, RFC 1122"),
    ("169.254.0.0/16", "link local (cloud metadata), RFC 3927"),
    ("172.16.0.0/12", "private use, RFC 1918"),
    ("192.0.0.0/24", "IETF protocol assignments, RFC 6890"),
    ("192.0.2.0/24", "documentation TEST-NET-1, RFC 5737"),
    ("192.31.196.0/24", "AS112-v4, RFC 7535"),
    ("192.52.193.0/24", "AMT, RFC 7450"),
    ("192.88.99.0/24", "deprecated 6to4 relay anycast, RFC 7526"),
    ("192.168.0.0/16", "private use, RFC 1918"),
    ("192.175.48.0/24", "direct delegation AS112 service, RFC 7534"),
    ("198.18.0.0/15", "benchmarking, RFC 2544"),
    ("198.51.100.0/24", "documentation TEST-NET-2, RFC 5737"),
    ("203.0.113.0/24", "documentation TEST-NET-3, RFC 5737"),
    ("224.0.0.0/4", "multicast, RFC 5771"),
    ("240.0.0.0/4", "reserved, RFC 1112"),
    ("255.255.255.255/32", "limited broadcast, RFC 919"),
    ("::/128", "unspecified, RFC 4291"),
    ("::1/128", "loopback, RFC 4291"),
    ("::/96", "deprecated IPv4-compatible, RFC 4291"),
    ("::ffff:0:0/96", "IPv4-mapped, RFC 4291"),
    ("64:ff9b::/96", "IPv4-IPv6 translation (NAT64 well-known prefix), RFC 6052"),
    ("64:ff9b:1::/48", "local-use IPv4-IPv6 translation, RFC 8215"),
    ("100::/64", "discard-only, RFC 6666"),
    ("100:0:0:1::/64", "dummy IPv6 prefix, RFC 9780"),
    ("2001::/23", "IETF protocol assignments (Teredo, ORCHID, benchmarking, AMT, AS112...), RFC 2928"),
    ("2001:db8::/32", "documentation, RFC 3849"),
    ("2002::/16", "6to4, RFC 3056"),
    ("2620:4f:8000::/48", "direct delegation AS112 service, RFC 7534"),
    ("3fff::/20", "documentation, RFC 9637"),
    ("5f00::/16", "segment routing SIDs, RFC 9602"),
    ("fc00::/7", "unique local, RFC 4193"),
    ("fe80::/10", "link local, RFC 4291"),
    ("fec0::/10", "deprecated site local, RFC 3879"),
    ("ff00::/8", "multicast, RFC 4291"),
)
# Prefixes that carry an IPv4 address: that address decides, so 6to4 or NAT64 to a public host works
# and to 127.0.0.1 or 169.254.169.254 does not.
IPV4_MAPPED, NAT64_WELL_KNOWN, SIX_TO_FOUR = (ipaddress.IPv6Network(n)
                                             for n in ("::ffff:0:0/96", "64:ff9b::/96", "2002::/16"))
EMBEDDED_IPV4 = (IPV4_MAPPED, NAT64_WELL_KNOWN, SIX_TO_FOUR)
GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_REFUSED: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(n) for n, _ in SPECIAL_PURPOSE)


def embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv4-mapped, NAT64 (64:ff9b::/96) or 6to4 address."""
    if not isinstance(address, ipaddress.IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in NAT64_WELL_KNOWN:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def is_public(address: IPAddress) -> bool:
    """False for every block of `SPECIAL_PURPOSE` and, in IPv6, for everything outside 2000::/3."""
    inner = embedded_ipv4(address)
    if inner is not None:
        return is_public(inner)
    if isinstance(address, ipaddress.IPv6Address) and address not in GLOBAL_UNICAST_V6:
        return False
    return not any(address in network for network in _REFUSED if network.version == address.version)


class CheckedBackend(httpcore.AsyncNetworkBackend):
    """Resolve, check every address, connect to the checked one (the TLS layer keeps the host name)."""

    def __init__(self, allowlist: Allowlist):
        self.allowlist = allowlist
        self.inner = httpcore.AnyIOBackend()

    async def resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host.strip("[]"))]
        except ValueError:
            pass
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise UrlFetchFailed(f"the host {host!r} cannot be resolved ({exc})") from None
        return list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None, socket_options=None) -> httpcore.AsyncNetworkStream:
        addresses = await self.resolve(host, port)
        refused = [a for a in addresses if not (is_public(a) or self.allowlist.allows(host, a))]
        if not addresses or refused:
            raise UrlForbidden(f"the URL's host {host} resolves to {refused[0] if refused else 'nothing'}, "
                               "a non-public address; fetching from it is refused")
        error: Exception | None = None
        for address in addresses:  # only ever the addresses just checked
            try:
                return await self.inner.connect_tcp(str(address), port, timeout=timeout,
                                                    local_address=local_address, socket_options=socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        raise error

    async def connect_unix_socket(self, *args, **kwargs):  # pragma: no cover - never asked for
        raise UrlForbidden("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class CheckedTransport(httpx.AsyncHTTPTransport):
    """httpx's own transport, with its connection pool built on `CheckedBackend`."""

    def __init__(self, allowlist: Allowlist):
        super().__init__(trust_env=False, retries=0)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(), max_connections=20, max_keepalive_connections=0,
            network_backend=CheckedBackend(allowlist))


class UrlFetcher:
    """`await fetcher(url) -> bytes`: the hook `faceserve.http.inputs` calls for `image_url`."""

    def __init__(self, *, allowlist: tuple[str, ...] | list[str] = (), max_bytes: int = 10 * 1024 * 1024,
                 timeout_s: float = 10.0, max_redirects: int = 3):
        self.allowlist = Allowlist.parse(allowlist)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects

    @staticmethod
    def check(url: str) -> None:
        """Refuse a URL that is never fetched (scheme, credentials, length) before it is kept for later."""
        _checked_url(url)

    async def __call__(self, url: str) -> bytes:
        try:
            async with asyncio.timeout(self.timeout_s):
                return await self._fetch(url)
        except TimeoutError:
            raise UrlTimeout(f"fetching the URL took longer than the {self.timeout_s:g} s limit") from None

    async def _fetch(self, url: str) -> bytes:
        timeout = httpx.Timeout(self.timeout_s)
        async with httpx.AsyncClient(transport=CheckedTransport(self.allowlist), timeout=timeout,
                                     follow_redirects=False, trust_env=False,
                                     headers={"User-Agent": "faceserve-urlfetch", "Accept": "image/*"}) as client:
            for hop in range(self.max_redirects + 1):
                request = client.build_request("GET", _checked_url(url))
                try:
                    response = await client.send(request, stream=True)
                except FaceserveError:
                    raise
                except httpx.TimeoutException:
                    raise UrlTimeout(f"fetching the URL took longer than the {self.timeout_s:g} s limit") from None
                except httpx.HTTPError as exc:
                    raise UrlFetchFailed(f"the URL could not be fetched: {type(exc).__name__}: {exc}") from None
                async with _closing(response):
                    if response.is_redirect:
                        location = response.headers.get("location", "")
                        url = urljoin(str(response.url), location)
                        continue
                    return await self._body(response)
        raise UrlFetchFailed(f"the URL redirected more than {self.max_redirects} times", code="url_too_many_redirects")

    async def _body(self, response: httpx.Response) -> bytes:
        if not response.is_success:
            raise UrlFetchFailed(f"the URL answered HTTP {response.status_code}")
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if not (kind.startswith(IMAGE_TYPES) or kind in GENERIC_TYPES) or kind == "image/svg+xml":
            raise UrlNotImage(f"the URL answered {kind or 'no content type'}, not an image")
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise UrlTooLarge(f"the URL's body is {declared} bytes; the limit is {self.max_bytes} bytes")
        chunks, size = [], 0
        try:
            async for chunk in response.aiter_raw():
                size += len(chunk)
                if size > self.max_bytes:
                    raise UrlTooLarge(f"the URL's body exceeds the {self.max_bytes}-byte limit")
                chunks.append(chunk)
        except httpx.TimeoutException:
            raise UrlTimeout(f"fetching the URL took longer than the {self.timeout_s:g} s limit") from None
        except httpx.HTTPError as exc:
            raise UrlFetchFailed(f"the URL's body could not be read: {type(exc).__name__}: {exc}") from None
        return b"".join(chunks)


def _checked_url(url: str) -> httpx.URL:
    if not isinstance(url, str) or len(url) > 4096:
        raise InvalidUrl("image_url must be a string of at most 4096 characters")
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError, TypeError) as exc:
        raise InvalidUrl(f"image_url is not a valid URL: {exc}") from None
    if parsed.scheme not in ("http", "https"):
        raise InvalidUrl(f"only http and https URLs are fetched, not {parsed.scheme or 'a relative URL'!r}")
    if not parsed.host:
        raise InvalidUrl("image_url has no host")
    if parsed.userinfo:
        raise InvalidUrl("image_url must not carry credentials")
    return parsed


class _closing:
    def __init__(self, response: httpx.Response):
        self.response = response

    async def __aenter__(self):
        return self.response

    async def __aexit__(self, *exc):
        await self.response.aclose()
