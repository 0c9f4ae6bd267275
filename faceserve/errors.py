"""Every error a caller can cause or see, with its HTTP status and stable code."""

from __future__ import annotations


class FaceserveError(Exception):
    status: int = 400
    code: str = "bad_request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": self.code, "message": self.message}


class InvalidImage(FaceserveError):
    status, code = 400, "invalid_image"


class InvalidRequest(FaceserveError):
    status, code = 400, "invalid_request"


class LimitExceeded(FaceserveError):
    """A configured limit was exceeded; `code` names the limit."""

    status = 422


class PayloadTooLarge(FaceserveError):
    status, code = 413, "body_too_large"


class Unauthorized(FaceserveError):
    status, code = 401, "unauthorized"


class NotFound(FaceserveError):
    status, code = 404, "not_found"


class BackendUnavailable(FaceserveError):
    """The inference backend cannot answer now; the caller may retry."""

    status, code = 503, "backend_unavailable"

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


# ---- fetching an image by URL ----

class InvalidUrl(FaceserveError):
    status, code = 400, "invalid_url"


class UrlForbidden(FaceserveError):
    status, code = 403, "url_forbidden"


class UrlTooLarge(FaceserveError):
    status, code = 413, "url_too_large"


class UrlFetchFailed(FaceserveError):
    status, code = 422, "url_fetch_failed"


class UrlTimeout(FaceserveError):
    status, code = 422, "url_timeout"


class UrlNotImage(FaceserveError):
    status, code = 415, "url_not_image"


class BackendMismatch(Exception):
    """The backend serves a model whose inputs/outputs differ from what the pipeline sends."""
