"""Identity: the gallery's identities and faces (every change audited under its caller), verify, identify, the
gallery's export, import and audit trail. Every gallery call runs in a worker thread (each Gallery method is
synchronous and thread-safe)."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from faceserve.errors import InvalidRequest, NotFound
from faceserve.gallery import AuditPage, Deleted, FacesAdded, Gallery, GalleryImport, IdentityDetail, IdentityPage
from faceserve.http.caller import Caller
from faceserve.pipeline.identity import Identification, Verification
from faceserve.pipeline.schemas import Box
from faceserve.services.images import ImageService
from faceserve.services.resources import Resources


class IdentityService:
    def __init__(self, resources: Resources, images: ImageService):
        self.resources, self.images = resources, images

    async def _gallery(self) -> Gallery:
        return (await self.resources.identity()).gallery

    # Every change takes the caller (the service: the request's; the CLI: LOCAL) for the gallery's audit trail.

    async def create_identity(self, caller: Caller, name: str, metadata: dict | None = None) -> IdentityDetail:
        gallery = await self._gallery()
        return (await asyncio.to_thread(gallery.create_identity, name, metadata, caller=caller)).answer()

    async def add_faces(self, caller: Caller, identity_id: str, uploads: list[Path] | None, b64s: list[str] | None,
                        boxes: list[Box | None] | None = None, thumbnails: bool = False) -> FacesAdded:
        """One face from each image (its only face, or the one at its box), added in one transaction."""
        items = self.images.batch_items(uploads, b64s)
        if boxes is not None and len(boxes) != len(items):
            raise InvalidRequest(f"{len(boxes)} boxes for {len(items)} images: give one box (or null) per image, "
                                 "in the order of the images", code="boxes_mismatch")
        stage = await self.resources.identity()
        await asyncio.to_thread(stage.gallery.get_identity, identity_id)  # missing: a 404 before any model runs
        images = await self.images.images_with_digests(items)
        faces = await asyncio.gather(*(
            stage.enrolment(pixels, digest, None if boxes is None or boxes[i] is None else _corners(boxes[i]),
                            f"image {i + 1}", thumbnails)
            for i, (pixels, digest) in enumerate(images)))
        added = await asyncio.to_thread(stage.gallery.add_faces, identity_id, faces, caller=caller)
        return FacesAdded(identity_id=identity_id, faces=[face.answer() for face in added])

    async def list_identities(self, limit: int = 100, after: str | None = None) -> IdentityPage:
        return await asyncio.to_thread((await self._gallery()).list_identities, limit, after)

    async def get_identity(self, identity_id: str) -> IdentityDetail:
        return (await asyncio.to_thread((await self._gallery()).get_identity, identity_id)).answer()

    async def face_thumbnail(self, face_id: str) -> bytes:
        thumbnail = await asyncio.to_thread((await self._gallery()).thumbnail, face_id)
        if thumbnail is None:
            raise NotFound(f"face {face_id!r} was enrolled without a thumbnail", code="no_thumbnail")
        return thumbnail

    async def delete_face(self, caller: Caller, face_id: str) -> Deleted:
        await asyncio.to_thread((await self._gallery()).delete_face, face_id, caller=caller)
        return Deleted(id=face_id, faces_deleted=1)

    async def delete_identity(self, caller: Caller, identity_id: str) -> Deleted:
        gallery = await self._gallery()
        return Deleted(id=identity_id,
                       faces_deleted=await asyncio.to_thread(gallery.delete_identity, identity_id, caller=caller))

    async def verify(self, uploads: list[Path] | None, b64s: list[str] | None) -> Verification:
        stage = await self.resources.identity()
        first, second = await self.images.images(self.images.items(uploads, b64s, range(2, 3)))
        return await stage.verify(first, second)

    async def identify(self, upload: Path | None = None, b64: str | None = None, url: str | None = None,
                       detector: str | None = None, top_k: int = 5) -> Identification:
        self.resources.pipeline.check_top_k(top_k, self.resources.settings.limits.max_top_k)
        stage = await self.resources.identity()
        return await stage.identify(await self.images.image(upload, b64, url), detector, top_k)

    async def export_gallery(self) -> bytes:
        """The gallery as the export file (JSON Lines, docs/store.md), one consistent snapshot."""
        buffer = io.BytesIO()
        await asyncio.to_thread((await self._gallery()).export_file, buffer)
        return buffer.getvalue()

    async def import_gallery(self, caller: Caller, upload: Path | None) -> GalleryImport:
        if upload is None:
            raise InvalidRequest("send the exported gallery file as `file`", code="no_file")
        gallery = await self._gallery()
        return (await asyncio.to_thread(gallery.import_file, Path(upload), caller=caller)).answer()

    async def audit(self, limit: int = 100, after: str | None = None) -> AuditPage:
        return await asyncio.to_thread((await self._gallery()).audit, limit, after)


def _corners(box: Box) -> tuple[float, float, float, float]:
    return box.x1, box.y1, box.x2, box.y2
