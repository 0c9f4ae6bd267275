"""Every path the service answers, with the scope a caller needs for it: the one table the access middleware
(faceserve/http/auth.py) enforces. A path missing here is refused (404) whatever the service would answer, so a
new route is unreachable until it is declared; tests/integration/test_auth.py fails for any route of the OpenAPI
schema missing here.

`uploads`: the route takes files, so a `multipart/form-data` body is accepted beside `application/json`; every
other route's body is JSON only (cross-site pages can send forms and text/plain, never JSON: docs/security.md).
"""

from __future__ import annotations

import dataclasses

from faceserve.http import OPEN_PATHS
from faceserve.http.caller import ADMIN, ANALYZE, ENROL
from faceserve.settings import JOBS_SUBMIT_ROUTE

PUBLIC = "public"  # no key: health, metrics, the web page and its files (they hold no data)
ANY_KEY = "any key"  # any valid key, whatever its scopes: what describes the API to the page


@dataclasses.dataclass(frozen=True)
class Route:
    scope: str  # a scope of caller.SCOPES, PUBLIC or ANY_KEY
    uploads: bool = False


ROUTES: dict[str, Route] = {
    **{path: Route(PUBLIC) for path in OPEN_PATHS},
    "/": Route(PUBLIC),
    "/docs": Route(PUBLIC),  # Swagger's page; the schema it reads needs a key
    "/docs.json": Route(ANY_KEY),
    "/schema.json": Route(ANY_KEY),
    "/features": Route(ANY_KEY),
    # analysis
    "/analyze": Route(ANALYZE, uploads=True),
    "/analyze_batch": Route(ANALYZE, uploads=True),
    "/annotate": Route(ANALYZE, uploads=True),
    "/classify": Route(ANALYZE, uploads=True),
    "/rotate": Route(ANALYZE, uploads=True),
    "/identify": Route(ANALYZE, uploads=True),
    "/verify": Route(ANALYZE, uploads=True),
    "/models": Route(ANALYZE),
    "/feedback": Route(ANALYZE),  # a caller corrects its own answers only
    JOBS_SUBMIT_ROUTE: Route(ANALYZE, uploads=True),
    "/jobs/status": Route(ANALYZE),  # a caller's own jobs; another caller's need `admin`
    "/jobs/results": Route(ANALYZE),
    "/jobs/cancel": Route(ANALYZE),
    # enrolment, and reading the gallery
    "/identities/create": Route(ENROL),
    "/identities/add_faces": Route(ENROL, uploads=True),
    "/identities": Route(ENROL),
    "/identities/get": Route(ENROL),
    "/identities/face_thumbnail": Route(ENROL),
    # administration: removal, the whole gallery in or out, everybody's corrections
    "/identities/delete": Route(ADMIN),
    "/identities/delete_face": Route(ADMIN),
    "/gallery/export": Route(ADMIN),
    "/gallery/import": Route(ADMIN, uploads=True),
    "/gallery/audit": Route(ADMIN),
    "/feedback/export": Route(ADMIN),
    "/feedback/summary": Route(ADMIN),
    "/models/reload": Route(ADMIN),  # serve a promoted or rolled back model version now
    "/models/compare": Route(ADMIN),  # a model's trials of a candidate version, over everybody's answers
}

# Folders of files: the page's own, and BentoML's Swagger UI files (/docs).
PUBLIC_PREFIXES = ("/web/", "/static_content/", "/assets/")
_PUBLIC_FILE = Route(PUBLIC)


def route_of(path: str) -> Route | None:
    """The declared route of `path`, None when it has none (refused)."""
    route = ROUTES.get(path)
    if route is None and path.startswith(PUBLIC_PREFIXES) and ".." not in path:  # no climbing out of the folder
        return _PUBLIC_FILE
    return route


def is_public(path: str) -> bool:
    """Reachable without an API key: health, metrics and the web page's own files."""
    route = route_of(path)
    return route is not None and route.scope == PUBLIC
