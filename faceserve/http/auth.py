"""Who may call what (docs/security.md): the access middleware in front of every route.

In order, for every HTTP request:
1. its path must be declared in the route table (`routes.py`), else 404: deny by default;
2. its `Host` must be allowed (DNS rebinding: a page of a hostile name resolved to this service), else 403
   `host_not_allowed`; health paths are exempt;
3. with API keys, a configured key (`Authorization: Bearer <key>` or `X-API-Key: <key>`), else 401, holding the
   route's scope, else 403 `missing_scope`; without keys, admin routes answer loopback clients only (403
   `admin_loopback_only`);
4. a write must not come from another site: a browser's `Sec-Fetch-Site` (or, without it, its `Origin`) must
   say the page is this service's own, else 403 `cross_site_request`;
5. a body must be JSON (`application/json`), or a form with files on routes that take files, else 415
   `unsupported_media_type`: a cross-site page can send forms and text/plain without asking, never JSON.

The `Caller` it decides goes into the ASGI scope (caller.CALLER). Keys are never logged.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
from urllib.parse import urlsplit

from faceserve.errors import FaceserveError, NotFound, Unauthorized, UnsupportedRequest
from faceserve.http import HEALTH_PATHS
from faceserve.http.caller import ADMIN, CALLER, SCOPES, Caller, client_address
from faceserve.http.keys import ApiKey, find_key
from faceserve.http.responses import error_response
from faceserve.http.routes import ANY_KEY, PUBLIC, Route, route_of

log = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
JSON = "application/json"
MULTIPART = "multipart/form-data"


def presented_key(headers: list[tuple[bytes, bytes]]) -> bytes | None:
    for name, value in headers:
        name = name.lower()
        if name == b"x-api-key":
            return value.strip()
        if name == b"authorization":
            scheme, _, token = value.strip().partition(b" ")
            if scheme.lower() == b"bearer" and token.strip():
                return token.strip()
    return None


def forbidden(code: str, message: str) -> FaceserveError:
    return FaceserveError(message, code=code, status=403)


def host_name(host: str) -> str:
    """A Host header's (or an allowlist entry's) name: lower case, without port, brackets or final dot."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:host.find("]")] if "]" in host else host
    if host.count(":") == 1:
        host = host.partition(":")[0]
    return host.rstrip(".")


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


@dataclasses.dataclass(frozen=True)
class HostAllowlist:
    """Names (any port) a request's Host may carry. `*.example.com` allows every name below example.com. The
    address the request's connection reached is always allowed: no rebinding names an address."""

    names: frozenset[str]

    @classmethod
    def of(cls, configured: tuple[str, ...], bind_host: str | None) -> "HostAllowlist":
        names = {*LOOPBACK_NAMES, *configured}
        if bind_host and not ipaddress.ip_address(bind_host).is_unspecified:
            names.add(bind_host)
        return cls(frozenset(host_name(name) for name in names))

    def allows(self, host: str, scope: dict) -> bool:
        name = host_name(host)
        server = scope.get("server")
        if server and name == host_name(str(server[0])):
            return True
        return name in self.names or any(
            allowed.startswith("*.") and name.endswith(allowed[1:]) for allowed in self.names)


class AccessMiddleware:
    """ASGI middleware: the checks of this module's docstring, then the `Caller` in the scope."""

    def __init__(self, app, keys: tuple[ApiKey, ...], hosts: HostAllowlist | None):
        self.app = app
        self.keys = keys
        self.hosts = hosts  # None: no Host check (keys configured and no FACESERVE_ALLOWED_HOSTS)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        try:
            scope[CALLER] = self.admit(scope)
        except FaceserveError as error:
            log.info("refused %s %s: %s", scope.get("method"), scope["path"], error.code)
            return await error_response(error)(scope, receive, send)
        await self.app(scope, receive, send)

    def admit(self, scope: dict) -> Caller:
        """The request's caller, or the FaceserveError that refuses it."""
        path = scope["path"]
        route = route_of(path)
        if route is None:
            raise NotFound(f"no route {path}")
        headers = scope.get("headers") or []
        host = _header(headers, b"host")
        if self.hosts is not None and path not in HEALTH_PATHS and host is not None \
                and not self.hosts.allows(host, scope):
            raise forbidden("host_not_allowed", f"this service does not answer to the host name "
                                                f"{host_name(host)!r}; FACESERVE_ALLOWED_HOSTS lists the names it does")
        caller = self.authenticate(scope, route, headers)
        if scope.get("method", "GET").upper() not in SAFE_METHODS and route.scope != PUBLIC:
            _refuse_cross_site(headers, host)
            _refuse_media_type(headers, route, path)
        return caller

    def authenticate(self, scope: dict, route: Route, headers) -> Caller:
        address = client_address(scope)
        if not self.keys:
            if route.scope == ADMIN and not is_loopback(address):
                raise forbidden("admin_loopback_only", f"{scope['path']} answers only clients on this machine "
                                                       "while the service has no API keys (docs/security.md)")
            return Caller(address=address)
        presented = presented_key(headers)
        key = find_key(self.keys, presented) if presented is not None else None
        if key is None:
            if route.scope == PUBLIC:
                return Caller(address=address, scopes=frozenset())
            message = ("an API key is required: send `Authorization: Bearer <key>` or `X-API-Key: <key>`"
                       if presented is None else "the API key is not valid")
            raise Unauthorized(message, headers={"WWW-Authenticate": 'Bearer realm="faceserve"'})
        if route.scope in SCOPES and route.scope not in key.scopes:
            raise forbidden("missing_scope", f"{scope['path']} needs the `{route.scope}` scope; the key "
                                             f"`{key.id}` has {', '.join(sorted(key.scopes))}")
        return Caller(address=address, key_id=key.id, scopes=key.scopes)


def _header(headers, name: bytes) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value.decode("latin-1")
    return None


def _refuse_cross_site(headers, host: str | None) -> None:
    """Browsers say where a request comes from (`Sec-Fetch-Site`, else `Origin`); other clients say nothing."""
    site = _header(headers, b"sec-fetch-site")
    if site is not None:
        if site.strip().lower() in ("same-origin", "none"):
            return
        raise forbidden("cross_site_request", f"a request from another site ({site.strip()}) may not change "
                                              "anything here")
    origin = _header(headers, b"origin")
    if origin is None:
        return
    if origin.strip().lower() != "null" and host is not None and _netloc(urlsplit(origin.strip()).netloc) == \
            _netloc(host):
        return
    raise forbidden("cross_site_request", f"a request from the page of another origin ({origin.strip()[:100]}) "
                                          "may not change anything here")


def _netloc(netloc: str) -> str:
    netloc = netloc.strip().lower()
    for default_port in (":80", ":443"):
        netloc = netloc.removesuffix(default_port)
    return netloc


def _refuse_media_type(headers, route: Route, path: str) -> None:
    accepted = (JSON, MULTIPART) if route.uploads else (JSON,)
    declared = [value.decode("latin-1") for name, value in headers if name.lower() == b"content-type"]
    has_body = any(name.lower() == b"transfer-encoding" or (name.lower() == b"content-length" and value.strip()
                   not in (b"", b"0")) for name, value in headers)
    if not declared and not has_body:
        return
    media_types = [value.partition(";")[0].strip().lower() for value in declared]
    if media_types and all(media_type in accepted for media_type in media_types):
        return
    raise UnsupportedRequest(f"{path} takes a body of Content-Type {' or '.join(accepted)}; got "
                             f"{', '.join(media_types) or 'none'}", code="unsupported_media_type")
