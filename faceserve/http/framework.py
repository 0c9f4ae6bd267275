"""BentoML's own behaviour, corrected where it is decided; service.py applies both before the app is built.

- `close_framework_downloads`: its request parsers never download a URL given as a file.
- `bound_metrics_labels`: its /metrics series are labelled by known paths only.
"""

from __future__ import annotations

from collections.abc import Collection

from starlette.datastructures import UploadFile

from faceserve.http import OPEN_PATHS


def close_framework_downloads() -> None:
    """Make BentoML's request parsers unable to download: a string in a file field is a 400, whatever the request.

    BentoML 1.4 turns text in a form's file field into a file by downloading it
    (`MultipartSerde.ensure_file`), and a JSON body for a one-file endpoint that is a URL
    likewise (`JSONSerde.parse_request`): no byte cap, compressed encodings followed,
    proxy variables honoured, addresses checked weakly. Its serde registry, which the
    server reads per request, gets subclasses without either path. Call once, before the
    ASGI app is built (service.py does); raises if BentoML's parsers are not the ones
    this was written against.
    """
    from _bentoml_impl import serde

    json_type = serde.ALL_SERDE["application/json"]
    if getattr(json_type, "faceserve_no_download", False):
        return
    if not (json_type is serde.JSONSerde
            and serde.ALL_SERDE["multipart/form-data"] is serde.MultipartSerde
            and serde.ALL_SERDE["application/x-www-form-urlencoded"] is serde.MultipartSerde
            and callable(getattr(serde.MultipartSerde, "ensure_file", None))):
        raise RuntimeError("BentoML's request parsers changed; faceserve.http.framework.close_framework_downloads "
                           "must be revised before this version serves requests")
    from bentoml.exceptions import BadInput

    class NoDownloadJSONSerde(serde.JSONSerde):
        faceserve_no_download = True
        parse_request = serde.Serde.parse_request  # JSONSerde's own first downloads a body that is a URL

    class NoDownloadMultipartSerde(serde.MultipartSerde):
        faceserve_no_download = True

        @staticmethod
        async def ensure_file(obj):
            if isinstance(obj, UploadFile):
                return obj
            raise BadInput("a file field holds text, not a file upload; "
                           "to give a URL, send JSON with an `image_url` field")

    serde.ALL_SERDE["application/json"] = NoDownloadJSONSerde
    serde.ALL_SERDE["multipart/form-data"] = NoDownloadMultipartSerde
    serde.ALL_SERDE["application/x-www-form-urlencoded"] = NoDownloadMultipartSerde


# ---- /metrics: one series per known path, not one per path a client invents

_DOC_PATHS = frozenset({"/", "/docs", "/docs.json", "/schema.json", "/features"})
_STATIC_PREFIXES = ("/static_content/", "/assets/", "/web/")
UNKNOWN_PATH_LABEL = "other"
_REAL_PATH = "faceserve.real_path"


def metrics_endpoint(path: str, routes: Collection[str]) -> str:
    """The `endpoint` label for `path`: itself when the service has it, else one fixed bucket."""
    if path in routes or path in OPEN_PATHS or path in _DOC_PATHS:
        return path
    for prefix in _STATIC_PREFIXES:
        if path.startswith(prefix):
            return prefix.rstrip("/")
    return UNKNOWN_PATH_LABEL


class _RealPath:
    """Gives the app behind the metrics middleware the path it was called with."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if _REAL_PATH in scope:
            scope = {**scope, "path": scope[_REAL_PATH]}
        await self.app(scope, receive, send)


def bound_metrics_labels() -> None:
    """Label BentoML's HTTP metrics with `metrics_endpoint(path)` instead of the raw request path.

    BentoML labels every series by `scope["path"]`, so each path a client invents
    becomes a new series in every worker for the life of the process. Its metrics
    middleware, looked up when the app is built, gets a subclass that reads a bounded
    label from the scope; the request itself keeps its path. Call before the app is built.
    """
    from bentoml._internal.context import server_context
    from bentoml._internal.server.http import instruments

    original = instruments.RunnerTrafficMetricsMiddleware
    if getattr(original, "faceserve_bounded", False):
        return

    class BoundedTrafficMetricsMiddleware(original):
        faceserve_bounded = True

        def __init__(self, app, **options):
            super().__init__(_RealPath(app), **options)

        async def __call__(self, scope, receive, send):
            path = scope.get("path")
            if scope["type"] in ("http", "websocket") and _REAL_PATH not in scope:
                label = metrics_endpoint(path, server_context.service_routes)
                if label != path:
                    scope = {**scope, "path": label, _REAL_PATH: path}
            await super().__call__(scope, receive, send)

    instruments.RunnerTrafficMetricsMiddleware = BoundedTrafficMetricsMiddleware
