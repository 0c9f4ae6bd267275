"""The web page people land on: the service's own address shows a page that analyses their photos.

Plain HTML, CSS and ES modules in `static/` (no build step, nothing fetched from another host),
mounted on the service by `service.py`. `app(settings)` is the ASGI app it mounts:

- `/`          the page (open under API keys: it holds no data; the page asks for a key on a 401)
- `/web/...`   its files (open, likewise)
- `/docs`      Swagger (BentoML's Swagger UI files), which the page displaces from `/`
- `/features`  what the page cannot read from the OpenAPI schema: whether URL fetching is on, the limits

Everything the page shows comes from the API itself (`/docs.json`, `/models`, `/analyze`, `/feedback/summary`, ...).
Not here: any endpoint logic (`faceserve.services`), the chat bot (`faceserve.bot`).
"""

from __future__ import annotations

from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from faceserve.settings import Settings

STATIC = Path(__file__).parent / "static"


def features(settings: Settings) -> dict:
    limits = settings.limits
    return {"url_fetch": settings.url_fetch, "max_body_bytes": limits.max_body_bytes,
            "max_batch_images": limits.max_batch_images}


def app(settings: Settings) -> Starlette:
    answer = features(settings)

    async def index(_: Request) -> FileResponse:
        return FileResponse(STATIC / "index.html")

    async def swagger(_: Request) -> FileResponse:
        return FileResponse(STATIC / "docs.html")

    async def feature_list(_: Request) -> JSONResponse:
        return JSONResponse(answer)

    return Starlette(routes=[
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/docs", swagger, methods=["GET", "HEAD"]),
        Route("/features", feature_list, methods=["GET"]),
        Mount("/web", StaticFiles(directory=STATIC), name="web"),
    ])
