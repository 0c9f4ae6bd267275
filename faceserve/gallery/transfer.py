"""Export and import of a gallery: one JSON Lines file (UTF-8), the model named in its first line.

    {"format": "faceserve-gallery", "format_version": 2, "model": {"name", "version", "dimension"},
     "faces_of_other_models": [{"name", "version", "dimension", "faces"}], ...}
    {"id", "name", "metadata", "created_at", "faces": [{"id", "image_sha256", "box": [x1, y1, x2, y2],
     "created_at", "vector": base64 of little-endian float32, "thumbnail": base64 (only if stored),
     "thumbnail_frame": {"x1", "y1", "scale"} (only for a thumbnail with room around the face)}]}
    ... one line per identity

Version 2 added `thumbnail_frame` (where the thumbnail lies in the photo, docs/identity.md); version 1 files, whose
thumbnails are the face's box alone, still import, as such. A faceserve that reads version 1 only refuses version 2
rather than take a framed thumbnail for a bare box.

Line-oriented so that a large gallery streams out and a damaged file names its bad line; base64 float32
keeps every bit of each embedding (decimal text would round). An import checks the whole file before it
writes anything, then adds it in ONE transaction: all of it or, refused, nothing. Ids are kept. An identity
already in the gallery is skipped if the file's line is identical to it (importing a file twice adds nothing
the second time) and refused otherwise (409 `identity_exists`, as is a new identity claiming a face id the
gallery holds, `face_exists`): an import never merges into an identity, so a line cannot add faces to
someone already enrolled.

A file holds the faces of one model. A gallery holding faces of several (its model changed, and they were not all
re-embedded, `faceserve gallery reembed`) exports those of its own model only, and its header counts the faces
left out per model; a file of another model is refused whole (`model_mismatch`): a mixed gallery never imports
as one model's.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import itertools
import json
import os
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, BinaryIO, Iterator

import numpy as np

from faceserve.errors import InvalidRequest, ModelMismatch
from faceserve.gallery import validation
from faceserve.gallery.records import ImportCounts, ThumbnailFrame, TransferCounts, frame_values
from faceserve.http.caller import Caller
from faceserve.store import utc_now

if TYPE_CHECKING:
    from faceserve.gallery.gallery import Gallery

FORMAT = "faceserve-gallery"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
FRAME_KEYS = ("x1", "y1", "scale")
# Deeper than any valid line (the object, its faces list, a face, its box; or the object and its metadata),
# with room for metadata a little too deep to be read and answered as such (`metadata_too_deep`).
MAX_LINE_DEPTH = 1 + validation.MAX_METADATA_DEPTH + 3

OTHER_MODELS = ("SELECT model_name, model_version, dimension, COUNT(*) FROM gallery_faces "
                "WHERE NOT (model_name = ? AND model_version = ? AND dimension = ?) "
                "GROUP BY model_name, model_version, dimension ORDER BY model_name, model_version, dimension")
EXPORT = ("SELECT i.id, i.name, i.metadata, i.created_at, f.id, f.vector, f.image_sha256, "
          "f.box_x1, f.box_y1, f.box_x2, f.box_y2, f.thumbnail, f.thumbnail_x1, f.thumbnail_y1, f.thumbnail_scale, "
          "f.created_at "
          "FROM gallery_identities i LEFT JOIN gallery_faces f ON f.identity_id = i.id "
          "AND f.model_name = ? AND f.model_version = ? AND f.dimension = ? ORDER BY i.id, f.id")


@dataclasses.dataclass(frozen=True)
class ExportedIdentity:
    """One checked line of an export, ready to insert."""

    id: str
    name: str
    metadata: str  # JSON text
    created_at: str
    # (face id, vector bytes, sha256, x1, y1, x2, y2, thumbnail or None, its frame's x1, y1, scale or None, created_at)
    faces: tuple[tuple, ...]
    line: int  # where the file holds it, for the answers that name it


def export(gallery: "Gallery", target: Path | BinaryIO) -> TransferCounts:
    model = gallery.model
    identities = faces = 0
    with _writable(target) as out, gallery.store.read() as tx:
        left_out = [{"name": name, "version": version, "dimension": int(dimension), "faces": int(count)}
                    for name, version, dimension, count in tx.all(OTHER_MODELS, (model.name, model.version,
                                                                                  model.dimension))]
        _write(out, {"format": FORMAT, "format_version": FORMAT_VERSION, "exported_at": utc_now(),
                     "model": dataclasses.asdict(model), "faces_of_other_models": left_out})
        # One statement: one consistent snapshot on both engines, however long the export takes.
        rows = tx.execute(EXPORT, (model.name, model.version, model.dimension))
        for (identity_id, name, metadata, created_at), group in itertools.groupby(rows, key=lambda r: r[:4]):
            line_faces = [_exported_face(row[4:]) for row in group if row[4] is not None]
            _write(out, {"id": identity_id, "name": name, "metadata": json.loads(metadata), "created_at": created_at,
                         "faces": line_faces})
            identities, faces = identities + 1, faces + len(line_faces)
    return TransferCounts(identities, faces)


def _exported_face(row: tuple) -> dict[str, Any]:
    face_id, vector, sha256, x1, y1, x2, y2, thumbnail, thumbnail_x1, thumbnail_y1, thumbnail_scale, created_at = row
    face = {"id": face_id, "image_sha256": sha256, "box": [x1, y1, x2, y2], "created_at": created_at,
            "vector": base64.b64encode(bytes(vector)).decode("ascii")}
    if thumbnail is not None:
        face["thumbnail"] = base64.b64encode(bytes(thumbnail)).decode("ascii")
    if thumbnail_scale is not None:
        face["thumbnail_frame"] = dict(zip(FRAME_KEYS, (thumbnail_x1, thumbnail_y1, thumbnail_scale)))
    return face


def _write(out: IO[bytes], record: dict) -> None:
    out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")


@contextlib.contextmanager
def _writable(target: Path | BinaryIO) -> Iterator[IO[bytes]]:
    """A file object as is; a path through a temporary sibling renamed at the end (never half a file)."""
    if not isinstance(target, (str, Path)):
        yield target
        return
    path = Path(target)
    partial = path.with_name(path.name + ".part")
    try:
        with open(partial, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def import_(gallery: "Gallery", source: Path | BinaryIO, caller: Caller) -> ImportCounts:
    with contextlib.ExitStack() as stack:
        lines = stack.enter_context(open(source, "rb")) if isinstance(source, (str, Path)) else source
        numbered = enumerate(lines, start=1)
        version = _check_header(gallery, next(numbered, (1, b""))[1])
        identities: list[ExportedIdentity] = []
        lines_of: dict[tuple[str, str], int] = {}  # ("identity" or "face", id) -> the line that holds it
        for number, line in numbered:
            if line.strip():
                identity = _identity(gallery, version, number, line)
                for key in (("identity", identity.id), *(("face", face[0]) for face in identity.faces)):
                    if key in lines_of:
                        first = lines_of[key]
                        where = f"lines {first} and {number}" if first != number else f"line {number} (twice)"
                        raise InvalidRequest(f"{where} of the gallery file hold {key[0]} {key[1]}",
                                             code="duplicate_id")
                    lines_of[key] = number
                identities.append(identity)
    return gallery.import_identities(identities, caller)


def _json(number: int, line: bytes) -> Any:
    """One line's JSON: UTF-8 (the format's encoding; a line in another is refused, never guessed), nested no
    deeper than MAX_LINE_DEPTH (checked before parsing: a parser recurses per level)."""
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(f"line {number} of the gallery file is not UTF-8") from None
    if validation.nesting(line) > MAX_LINE_DEPTH:
        raise InvalidRequest(f"line {number} of the gallery file nests lists and objects deeper than "
                             f"{MAX_LINE_DEPTH} levels", code="too_deep")
    try:
        return json.loads(text)
    except ValueError:
        raise InvalidRequest(f"line {number} of the gallery file is not JSON") from None


def _check_header(gallery: "Gallery", line: bytes) -> int:
    """The file's format version, once its header is checked."""
    header = _json(1, line)
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise InvalidRequest(f"not a gallery export: its first line does not say \"format\": \"{FORMAT}\"")
    version = header.get("format_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise InvalidRequest(f"gallery file format version {validation.shown(version)}; this faceserve reads "
                             f"versions {', '.join(map(str, READABLE_VERSIONS))}")
    theirs = header.get("model")
    if not isinstance(theirs, dict):
        raise InvalidRequest("line 1 of the gallery file: \"model\" is an object {name, version, dimension}")
    ours = dataclasses.asdict(gallery.model)
    if theirs != ours:
        raise ModelMismatch(
            f"the file holds embeddings of {validation.shown(theirs.get('name'))} version "
            f"{validation.shown(theirs.get('version'))} ({validation.shown(theirs.get('dimension'))} values), this "
            f"gallery those of {ours['name']!r} version {ours['version']!r} ({ours['dimension']} values): embeddings "
            "of different models cannot be compared; enrol the photos again with this model instead")
    return version


def _identity(gallery: "Gallery", version: int, number: int, line: bytes) -> ExportedIdentity:
    record = _json(number, line)
    try:
        if not isinstance(record, dict):
            raise InvalidRequest("an identity is a JSON object")
        if not isinstance(record.get("faces"), list):
            raise InvalidRequest("\"faces\" is a list of objects")
        faces = tuple(_face(gallery, version, face) for face in record["faces"])
        return ExportedIdentity(validation.record_id(record["id"]), validation.name(record["name"]),
                                validation.metadata_json(record["metadata"]), validation.timestamp(record["created_at"]),
                                faces, number)
    except InvalidRequest as exc:
        raise InvalidRequest(f"line {number} of the gallery file: {exc.message}", code=exc.code) from None
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise InvalidRequest(f"line {number} of the gallery file is malformed ({type(exc).__name__}"
                             f"{': missing ' + validation.shown(exc.args[0]) if isinstance(exc, KeyError) else ''})") \
            from None


def _face(gallery: "Gallery", version: int, face: Any) -> tuple:
    if not isinstance(face, dict):
        raise InvalidRequest("each of \"faces\" is an object {id, image_sha256, box, created_at, vector}")
    encoded = face.get("thumbnail")
    vector = np.frombuffer(base64.b64decode(face["vector"], validate=True), dtype="<f4")
    box = validation.box(face["box"])
    thumbnail = validation.thumbnail(None if encoded is None else base64.b64decode(encoded, validate=True))
    frame = validation.thumbnail_frame(_frame(version, face.get("thumbnail_frame")), box, thumbnail)
    return (validation.record_id(face["id"]), validation.vector_bytes(gallery.model, vector),
            validation.sha256(face["image_sha256"]), *box, thumbnail, *frame_values(frame),
            validation.timestamp(face["created_at"]))


def _frame(version: int, value: Any) -> ThumbnailFrame | None:
    """A face's `thumbnail_frame` as the file gives it: absent, or an object of exactly its three keys (version 2)."""
    if value is None:
        return None
    if version < 2:
        raise InvalidRequest("\"thumbnail_frame\" is in gallery files of format version 2, not 1",
                             code="invalid_thumbnail")
    if not isinstance(value, dict) or sorted(value) != sorted(FRAME_KEYS):
        raise InvalidRequest("\"thumbnail_frame\" is an object {x1, y1, scale}", code="invalid_thumbnail")
    return ThumbnailFrame(*(value[key] for key in FRAME_KEYS))
