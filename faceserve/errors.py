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

    @classmethod
    def kind(cls, name: str, status: int, code: str, doc: str) -> type["FaceserveError"]:
        """A subclass with a fixed status and code (most errors differ in nothing else)."""
        return type(name, (cls,), {"status": status, "code": code, "__doc__": doc, "__module__": __name__})


InvalidImage = FaceserveError.kind("InvalidImage", 400, "invalid_image", "The bytes are not an image we decode.")
InvalidRequest = FaceserveError.kind("InvalidRequest", 400, "invalid_request", "The request itself is malformed.")
PayloadTooLarge = FaceserveError.kind("PayloadTooLarge", 413, "body_too_large", "The body is over the byte limit.")
Unauthorized = FaceserveError.kind("Unauthorized", 401, "unauthorized", "No valid API key was presented.")
NotFound = FaceserveError.kind("NotFound", 404, "not_found", "The named model or resource does not exist.")
InvalidUrl = FaceserveError.kind("InvalidUrl", 400, "invalid_url", "The URL is not an http(s) URL we fetch.")
UrlForbidden = FaceserveError.kind("UrlForbidden", 403, "url_forbidden", "The URL's host is not a public address.")
UrlTooLarge = FaceserveError.kind("UrlTooLarge", 413, "url_too_large", "The URL's body is over the byte limit.")
UrlFetchFailed = FaceserveError.kind("UrlFetchFailed", 422, "url_fetch_failed", "The URL could not be fetched.")
UrlTimeout = FaceserveError.kind("UrlTimeout", 422, "url_timeout", "Fetching the URL took too long.")
UrlNotImage = FaceserveError.kind("UrlNotImage", 415, "url_not_image", "The URL did not answer with an image.")
RestartRequired = FaceserveError.kind("RestartRequired", 409, "restart_required",
                                      "The repository changed in a way only a restart serves.")
RepositoryInvalid = FaceserveError.kind("RepositoryInvalid", 409, "invalid_repository",
                                        "The model repository on disk cannot be served as it is.")
VersionNotLoaded = FaceserveError.kind("VersionNotLoaded", 409, "version_not_loaded",
                                       "The backend does not hold the model version the repository now names.")
ModelMismatch = FaceserveError.kind("ModelMismatch", 409, "model_mismatch",
                                    "Embeddings of another model (name or version) than the gallery's.")


class LimitExceeded(FaceserveError):
    """A configured limit was exceeded; `code` names the limit."""

    status = 422


class UnsupportedRequest(FaceserveError):
    """The request is well formed but declared in a way we refuse (a charset, a compression); `code` says which."""

    status = 415


class Unavailable(FaceserveError):
    """The service cannot answer now; the caller may retry after `retry_after` seconds."""

    status, code = 503, "unavailable"

    def __init__(self, message: str, *, retry_after: int = 1):
        super().__init__(message, headers={"Retry-After": str(retry_after)})


class BackendUnavailable(Unavailable):
    """The inference backend cannot answer now."""

    code = "backend_unavailable"


class StoreUnavailable(Unavailable):
    """The database behind the gallery (and every other stored concept) cannot be reached now."""

    code = "store_unavailable"


class Overloaded(Unavailable):
    """Every request slot is taken."""

    code = "overloaded"


class BackendMismatch(Exception):
    """The backend serves a model whose inputs/outputs differ from what the pipeline sends."""
