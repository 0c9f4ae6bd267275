"""ASGI middlewares for load: a bound on requests in flight, and keep-alive connections spread over workers."""

from __future__ import annotations

import collections

from faceserve.errors import Overloaded
from faceserve.http import OPEN_PATHS
from faceserve.http.responses import RETRY_AFTER_S, error_response


class ConcurrencyLimitMiddleware:
    """ASGI middleware: beyond `max_concurrency` requests in flight, answer 503 with Retry-After at once.

    Replaces BentoML's `traffic.max_concurrency`, whose 429 is sent by a middleware
    outside ours (so it could carry neither our body nor Retry-After). Health and
    metrics are never limited.
    """

    def __init__(self, app, max_concurrency: int):
        self.app = app
        self.max_concurrency = max_concurrency
        self.in_flight = 0

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            return await self.app(scope, receive, send)
        if self.in_flight >= self.max_concurrency:
            error = Overloaded(f"the server is handling its limit of {self.max_concurrency} concurrent requests; "
                               f"retry after {RETRY_AFTER_S} s", retry_after=int(RETRY_AFTER_S))
            return await error_response(error)(scope, receive, send)
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1


class KeepAliveLimitMiddleware:
    """ASGI middleware: close a client connection after `max_requests` requests (nginx's keepalive_requests).

    Workers share one listening socket, and a burst of new connections goes to whichever
    worker accepts first: a client's keep-alive pool can end up pinned to one worker while
    the others idle (15 of 16 Locust connections on one of two workers, measured). A
    bounded number of requests per connection lets the pool spread out again, because
    the least busy worker is the first to accept the reconnection.
    """

    TRACKED = 4096  # connections remembered; the oldest entries go first

    def __init__(self, app, max_requests: int):
        self.app = app
        self.max_requests = max_requests
        self._served: collections.OrderedDict[tuple, int] = collections.OrderedDict()

    async def __call__(self, scope, receive, send):
        client = scope.get("client")
        if scope["type"] != "http" or not client:
            return await self.app(scope, receive, send)
        connection = tuple(client)
        served = self._served.pop(connection, 0) + 1
        if served < self.max_requests:
            self._served[connection] = served
            if len(self._served) > self.TRACKED:
                self._served.popitem(last=False)
            return await self.app(scope, receive, send)

        async def closing_send(message):
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)
        await self.app(scope, receive, closing_send)
