"""Re-embedding: the faces a gallery holds under another embedding model than the serving one (an earlier version
of it, or another model) embedded again by the serving model from their stored thumbnails, so that they are
searched again (`python -m faceserve gallery reembed`, docs/identity.md).

The gallery is searched only among the serving model's faces; the photos are never stored, so a face can be
embedded again only from its thumbnail (kept when it was enrolled with `thumbnails`). A thumbnail shows the face
with room around it for every crop recipe (faceserve/pipeline/identity.py), and its frame says where it lies in the
photo: the face is embedded at its box carried into the thumbnail, by the pipeline's own `at_boxes` and `embed`
(the serving model's crop recipe, landmarks placed again), so it is cut as from the photo, only smaller. A
thumbnail stored before frames existed is the box alone: it is embedded as a face whose box is the whole thumbnail,
without the margin its recipe takes around the box (docs/identity.md measures both). The new face joins the same
identity with the stored face's image sha256, box, thumbnail and frame, one transaction and one audit entry per
identity; the stored faces stay, so a rollback to their model finds its gallery whole. A face whose identity holds
a face of the serving model from the same image at the same box is not embedded again: a second run adds nothing.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import itertools
from typing import Callable

from faceserve.errors import FaceserveError, InvalidRequest, NotFound
from faceserve.gallery import NewFace, StoredFace, validation
from faceserve.gallery.gallery import ADDED, GONE, PRESENT
from faceserve.http.caller import LOCAL, Caller
from faceserve.models.versions import model_ref
from faceserve.pipeline import imaging
from faceserve.pipeline.identity import IdentityStage

# Why a face was not re-embedded.
NO_THUMBNAIL = "no_thumbnail"  # enrolled without `thumbnails`: nothing of its photo was kept; enrol it again
UNDECODABLE_THUMBNAIL = "undecodable_thumbnail"
INVALID_EMBEDDING = "invalid_embedding"  # the model gave no vector the gallery can store (finite, of a usable norm)
DELETED = "deleted"  # the face or its identity was deleted while the command ran


@dataclasses.dataclass(frozen=True)
class NotReembedded:
    face_id: str
    identity_id: str
    model: str  # the model it is stored under, as name:version
    reason: str


@dataclasses.dataclass
class ReembedReport:
    model: str  # the serving model, as name:version
    dry_run: bool
    faces_seen: int = 0  # faces stored under other models
    reembedded: int = 0  # added under the serving model (with --dry-run: would be)
    already_present: int = 0  # their identity holds them under the serving model already
    not_reembedded: list[NotReembedded] = dataclasses.field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Whether every face that could be re-embedded was (a face deleted meanwhile needs nothing)."""
        return all(face.reason == DELETED for face in self.not_reembedded)

    def as_json(self) -> dict:
        return dataclasses.asdict(self)

    def summary(self) -> str:
        reasons = collections.Counter(face.reason for face in self.not_reembedded)
        missed = ", ".join(f"{reasons[reason]} {reason}" for reason in sorted(reasons)) or "none"
        verb = "would be re-embedded" if self.dry_run else "re-embedded"
        return (f"{self.faces_seen} faces under other models than {self.model}: {self.reembedded} {verb}, "
                f"{self.already_present} already present, not re-embedded: {missed}")


async def reembed(stage: IdentityStage, *, dry_run: bool = False, caller: Caller = LOCAL,
                  progress: Callable[[int, int], None] | None = None) -> ReembedReport:
    """Re-embed every face of the stage's gallery stored under another model (see the module); `progress(done,
    total)` after each identity. With `dry_run` every face is embedded as in a real run, and nothing is written."""
    gallery = stage.gallery
    report = ReembedReport(model=stage.model, dry_run=dry_run)
    faces = await asyncio.to_thread(gallery.faces_of_other_models)
    report.faces_seen = len(faces)
    done = 0
    for identity_id, group in itertools.groupby(faces, key=lambda item: item[0].identity_id):
        group = list(group)
        candidates: list[tuple[str, NewFace]] = []
        for face, present in group:
            if present:
                report.already_present += 1
                continue
            embedded = await _embedded(stage, face)
            if isinstance(embedded, str):
                report.not_reembedded.append(_missed(face, embedded))
            else:
                candidates.append((face.id, embedded))
        if candidates:
            outcomes = await asyncio.to_thread(gallery.add_reembedded, identity_id, candidates, caller=caller,
                                               dry_run=dry_run)
            by_id = {face.id: face for face, _ in group}
            for (face_id, _), outcome in zip(candidates, outcomes):
                if outcome == ADDED:
                    report.reembedded += 1
                elif outcome == PRESENT:
                    report.already_present += 1
                else:
                    assert outcome == GONE, outcome
                    report.not_reembedded.append(_missed(by_id[face_id], DELETED))
        done += len(group)
        if progress is not None:
            progress(done, len(faces))
    return report


async def _embedded(stage: IdentityStage, face: StoredFace) -> NewFace | str:
    """The face embedded by the serving model from its thumbnail, or why it cannot be."""
    if not face.has_thumbnail:
        return NO_THUMBNAIL
    try:
        thumbnail = await asyncio.to_thread(stage.gallery.thumbnail, face.id)
    except NotFound:
        return DELETED
    if thumbnail is None:
        return NO_THUMBNAIL
    try:
        pixels = await asyncio.to_thread(imaging.decode, thumbnail)
    except FaceserveError:
        return UNDECODABLE_THUMBNAIL
    height, width = pixels.shape[:2]
    frame = face.thumbnail_frame
    box = (0.0, 0.0, float(width), float(height)) if frame is None else frame.inside(face.box)
    found = await stage.pipeline.at_boxes(pixels, [box])
    (vector,) = await stage.pipeline.embed(pixels, found)
    try:  # the gallery's own rule for a storable vector, so that its write cannot refuse the identity's faces
        validation.vector_bytes(stage.gallery.model, vector)
    except InvalidRequest:
        return INVALID_EMBEDDING
    return NewFace(vector, face.image_sha256, face.box, thumbnail, frame)


def _missed(face: StoredFace, reason: str) -> NotReembedded:
    return NotReembedded(face.id, face.identity_id, model_ref(face.model_name, face.model_version), reason)
