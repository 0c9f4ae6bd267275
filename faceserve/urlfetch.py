"""Fetching an image by URL without becoming an SSRF proxy.

Off unless FACESERVE_URL_FETCH=1. Built on httpx/httpcore with one custom piece:
a network backend that resolves the host itself, refuses the connection unless
every address is public (or allowlisted), and then connects to the address it
checked — so a DNS answer that changes between check and connect (rebinding)
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


def unmapped(address: IPAddress) -> IPAddress:
    """The IPv4 address behind an IPv4-mapped (::ffff:a.b.c.d) or NAT64-less 6to4/compat form."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address.sixtofour is not None:
            return address.sixtofour
        if address.teredo is not None:
            return address.teredo[1]
    return address


def is_public(address: IPAddress) -> bool:
    """False for loopback, private, link-local (169.254.169.254 too), multicast, unspecified, reserved."""
    address = unmapped(address)
    return address.is_global and not (address.is_multicast or address.is_unspecified or address.is_reserved
                                       or address.is_link_local or address.is_loopback or address.is_private)


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
    """`await fetcher(url) -> bytes`: the hook `faceserve.inputs` calls for `image_url`."""

    def __init__(self, *, allowlist: tuple[str, ...] | list[str] = (), max_bytes: int = 10 * 1024 * 1024,
                 timeout_s: float = 10.0, max_redirects: int = 3):
        self.allowlist = Allowlist.parse(allowlist)
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s
        self.max_redirects = max_redirects

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
