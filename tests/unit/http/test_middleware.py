"""The keep-alive limit: every n-th response of a connection closes it, per connection."""

from __future__ import annotations

import asyncio

import httpx
from starlette.responses import PlainTextResponse

from faceserve.http.middleware import KeepAliveLimitMiddleware


async def _ok(scope, receive, send):
    await PlainTextResponse("ok")(scope, receive, send)


def test_keepalive_limit_closes_every_nth_response_of_a_connection():
    app = KeepAliveLimitMiddleware(_ok, max_requests=3)

    async def main():
        transport = httpx.ASGITransport(app=app, client=("10.0.0.1", 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            return [(await client.get("/")).headers.get("connection") for _ in range(7)]
    assert asyncio.run(main()) == [None, None, "close", None, None, "close", None]


def test_keepalive_limit_counts_each_connection_separately():
    app = KeepAliveLimitMiddleware(_ok, max_requests=2)

    async def main():
        seen = []
        for port in (1, 2, 1, 2):
            transport = httpx.ASGITransport(app=app, client=("10.0.0.1", port))
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
                seen.append((await client.get("/")).headers.get("connection"))
        return seen
    assert asyncio.run(main()) == [None, None, "close", "close"]
