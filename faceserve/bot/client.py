"""The faceserve service as the bot uses it: an image (bytes or a URL) in, the analysis and the drawn photo out."""

from __future__ import annotations

import httpx


class ServiceError(Exception):
    """The service refused the image (its JSON error shape), or could not be reached (`status` 0)."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


class FaceserveClient:
    def __init__(self, url: str, api_key: str | None = None, timeout_s: float = 60.0):
        self.http = httpx.AsyncClient(base_url=url.rstrip("/"), timeout=timeout_s,
                                      headers={"X-API-Key": api_key} if api_key else {})
        self._identity: bool | None = None

    async def offers_identity(self) -> bool:
        """Whether the service knows people (its OpenAPI schema has `/identities`); asked once."""
        if self._identity is None:
            try:
                response = await self.http.get("/docs.json")
                response.raise_for_status()
                self._identity = "/identities" in response.json().get("paths", {})
            except (httpx.HTTPError, ValueError):
                return False  # asked again next time
        return self._identity

    async def look(self, *, image: bytes | None = None, url: str | None = None,
                   image_type: str = "image/jpeg") -> tuple[dict, bytes | None]:
        """The analysis (with each face's identity where the service knows people), and the annotated
        photo (JPEG) when there is a face to draw."""
        fields = {"identify": "true"} if await self.offers_identity() else {}
        analysis = (await self._post("analyze", image, url, image_type, fields)).json()
        if not analysis["faces"]:
            return analysis, None
        return analysis, (await self._post("annotate", image, url, image_type, {"format": "jpeg"})).content

    async def _post(self, endpoint: str, image: bytes | None, url: str | None, image_type: str,
                    fields: dict[str, str]) -> httpx.Response:
        try:
            if image is not None:
                response = await self.http.post(f"/{endpoint}", data=fields,
                                                files={"image": ("photo", image, image_type)})
            else:
                response = await self.http.post(f"/{endpoint}", json={"image_url": url, **fields})
        except httpx.HTTPError as error:
            raise ServiceError(0, "unreachable", f"{type(error).__name__}: {error}") from error
        if response.status_code >= 400:
            try:
                body = response.json()
                raise ServiceError(response.status_code, str(body["error"]), str(body["message"]))
            except (ValueError, KeyError, TypeError):
                raise ServiceError(response.status_code, "http_error", response.text[:200]) from None
        return response

    async def close(self) -> None:
        await self.http.aclose()
