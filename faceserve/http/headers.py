"""The security headers of every answer: never sniffed into another type, never framed, no Referer sent on, and a
Content-Security-Policy: the page's (its own files only), Swagger's, and none at all for API answers, which are
data and must never run as a document (a thumbnail holding HTML, say).
"""

from __future__ import annotations

from faceserve.http.routes import PUBLIC_PREFIXES

# The page (faceserve/web/static): ES modules and one stylesheet of its own, no inline script or style; its
# images are canvases and its download a blob: link (navigation, which CSP leaves alone).
PAGE_CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
            "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
# Swagger UI (BentoML's files at /static_content): inline styles and data: icons of its own.
DOCS_CSP = ("default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; object-src 'none'; "
            "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
API_CSP = "default-src 'none'; frame-ancestors 'none'; sandbox"

_COMMON = ((b"x-content-type-options", b"nosniff"), (b"x-frame-options", b"DENY"),
           (b"referrer-policy", b"no-referrer"))
_OURS = {name for name, _ in _COMMON} | {b"content-security-policy"}


def policy_of(path: str) -> str:
    if path == "/" or path.startswith("/web/"):
        return PAGE_CSP
    if path == "/docs" or path.startswith(PUBLIC_PREFIXES):
        return DOCS_CSP
    return API_CSP


class SecurityHeadersMiddleware:
    """ASGI middleware: the headers above on every HTTP answer, whoever wrote it (outermost)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        added = [*_COMMON, (b"content-security-policy", policy_of(scope["path"]).encode())]

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in _OURS]
                message = {**message, "headers": [*kept, *added]}
            await send(message)

        await self.app(scope, receive, send_with_headers)
