"""Images in: the bytes of an upload, a base64 string or a URL, checked against the limits and decoded; a batch's
images checked together before any is decoded; and the one model-free edit, rotation."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path
from typing import Awaitable, Callable

import numpy as np

from faceserve.errors import LimitExceeded
from faceserve.http import inputs
from faceserve.pipeline import imaging
from faceserve.settings import Limits, Settings

ImageItem = tuple[Path | None, str | None]  # an upload or a base64 string


async def _nothing_to_start() -> None:
    return None


class ImageService:
    def __init__(self, limits: Limits, fetch=None, ready: Callable[[], Awaitable[None]] = _nothing_to_start):
        """`fetch`: the `image_url` fetcher (None answers `url_fetch_disabled`); `ready`: awaited before an image is
        read, so that the models are loaded before the first one is decoded."""
        self.limits, self.fetch, self.ready = limits, fetch, ready

    @classmethod
    def from_settings(cls, settings: Settings,
                      ready: Callable[[], Awaitable[None]] = _nothing_to_start) -> "ImageService":
        return cls(settings.limits, _FetcherOnFirstUse(settings) if settings.url_fetch else None, ready)

    async def read(self, upload: Path | None = None, b64: str | None = None, url: str | None = None) -> bytes:
        """The bytes of exactly one image given one of the three ways."""
        await self.ready()
        return await inputs.image_bytes(upload, b64, url, self.limits, self.fetch)

    async def decode(self, data: bytes) -> np.ndarray:
        return await asyncio.to_thread(imaging.decode, data, self.limits.decode)

    async def image(self, upload: Path | None = None, b64: str | None = None, url: str | None = None) -> np.ndarray:
        return (await self.image_and_bytes(upload, b64, url))[0]

    async def image_and_bytes(self, upload: Path | None = None, b64: str | None = None,
                              url: str | None = None) -> tuple[np.ndarray, bytes]:
        data = await self.read(upload, b64, url)
        return await self.decode(data), data

    def items(self, uploads: list[Path] | None, b64s: list[str] | None, count: range) -> list[ImageItem]:
        """A batch's (upload, base64) images, uploads first; `count` images or a 422 `batch_size`."""
        items = [(upload, None) for upload in uploads or []] + [(None, b64) for b64 in b64s or []]
        if len(items) not in count:
            wanted = f"{count.start}" if len(count) == 1 else f"between {count.start} and {count.stop - 1}"
            raise LimitExceeded(f"send {wanted} images; got {len(items)}", code="batch_size")
        return items

    def batch_items(self, uploads: list[Path] | None, b64s: list[str] | None) -> list[ImageItem]:
        """`items` of one to `max_batch_images` images."""
        return self.items(uploads, b64s, range(1, self.limits.max_batch_images + 1))

    async def images(self, items: list[ImageItem]) -> list[np.ndarray]:
        """The (upload, base64) images of a batch, decoded only once every header is checked and their pixels
        together are within `max_batch_pixels`."""
        return [pixels for pixels, _ in await self.images_with_digests(items)]

    async def images_with_digests(self, items: list[ImageItem]) -> list[tuple[np.ndarray, str]]:
        """`images`, each with the sha256 of its bytes."""
        await self.ready()
        limits = self.limits
        blobs = [await inputs.image_bytes(upload, b64, None, limits, self.fetch) for upload, b64 in items]
        sizes = await asyncio.to_thread(lambda: [imaging.probe(data, limits.decode) for data in blobs])
        _check_batch_pixels([width * height for width, height in sizes], limits.max_batch_pixels)
        images = []
        for data in blobs:
            images.append(await self.decode(data))
            _check_batch_pixels([image.shape[0] * image.shape[1] for image in images], limits.max_batch_pixels)
        return [(image, digest(data)) for image, data in zip(images, blobs)]

    async def rotate(self, upload: Path | None = None, b64: str | None = None, url: str | None = None,
                     degrees: int = 90, fmt: str = "png") -> bytes:
        imaging.check_rotation(degrees)  # before the image is read
        return await self.rotated(await self.read(upload, b64, url), degrees, fmt)

    async def rotated(self, data: bytes, degrees: int, fmt: str = "png") -> bytes:
        """The image `data` turned counter-clockwise by `degrees` (a multiple of 90), encoded as `fmt`."""
        imaging.check_rotation(degrees)
        pixels = await self.decode(data)
        return await asyncio.to_thread(lambda: imaging.encode(imaging.rotate(pixels, degrees), fmt))


class _FetcherOnFirstUse:
    """The URL fetcher, imported and built when a URL is first checked or fetched: the Triton models, which are
    given bytes, run where its HTTP client is not installed."""

    def __init__(self, settings: Settings):
        self._settings, self._fetcher = settings, None

    def _get(self):
        if self._fetcher is None:
            from faceserve.http.urlfetch import UrlFetcher
            settings, limits = self._settings, self._settings.limits
            self._fetcher = UrlFetcher(allowlist=settings.url_allowlist, max_bytes=limits.url_max_bytes,
                                       timeout_s=limits.url_timeout_s, max_redirects=limits.url_max_redirects)
        return self._fetcher

    def check(self, url: str) -> None:
        self._get().check(url)

    async def __call__(self, url: str) -> bytes:
        return await self._get()(url)


def digest(data: bytes) -> str:
    """How answers, the gallery and feedback name an image: the sha256 of its bytes."""
    return hashlib.sha256(data).hexdigest()


def _check_batch_pixels(pixels: list[int], limit: int) -> None:
    if sum(pixels) > limit:
        raise LimitExceeded(f"the {len(pixels)} images hold {sum(pixels)} pixels together; the limit is {limit} "
                            "pixels per request", code="batch_too_large")
