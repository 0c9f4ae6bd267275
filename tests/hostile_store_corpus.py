"""A hostile corpus for the stored surfaces: the gallery, its import and export, jobs, feedback and the page.

Each `Attack` is one kind of hostile (or merely wrong) request and the one answer it must get: an HTTP
status and error code. None of them may change anything stored. Bodies that need something that exists
(an enrolled identity, an exported line, an answered request) are built from the `Seed` the test made
first. `mode` says where an attack applies: `any`, `keyless` (a service without API keys), `keyed`.
The corpus is sent by tests/integration/test_hostile_store.py to both stores, with and without keys;
`python -m tests.hostile_store_corpus` prints the table of kinds.
"""

from __future__ import annotations

import base64
import dataclasses
import json
import zipfile
from typing import Callable

import numpy as np
from PIL import Image

from tests.hostile_corpus import good_jpeg, save
from tests.support import marked_encrypted, zip_bytes

# API keys of the keyed service: one per scope, and a second analyze key (another caller).
KEYS = {"admin": ("ops", "analyze,enrol,admin", "k-admin-0123456789abcdef"),
        "enrol": ("enroller", "enrol", "k-enrol-0123456789abcdef"),
        "analyze": ("app", "analyze", "k-analyze-0123456789abcdef"),
        "analyze2": ("other-app", "analyze", "k-analyze2-0123456789abcdef")}
UNSUPPORTED = (415, "unsupported_media_type")
INVALID = (400, "invalid_request")
EMBEDDING = (400, "invalid_embedding")
TEXT = (400, "invalid_text")
TOO_DEEP = (400, "too_deep")
DUPLICATE = (400, "duplicate_id")
METADATA_SIZE = (400, "metadata_too_large")
METADATA_DEPTH = (400, "metadata_too_deep")
THUMBNAIL = (400, "invalid_thumbnail")
ARCHIVE = (400, "invalid_archive")
CROSS_SITE = (403, "cross_site_request")
HOST = (403, "host_not_allowed")
NOT_FOUND = (404, "not_found")
MISSING_SCOPE = (403, "missing_scope")
UNAUTHORIZED = (401, "unauthorized")


@dataclasses.dataclass(frozen=True)
class Seed:
    """What exists before the corpus runs: one identity with one face, its export, one remembered answer."""

    identity_id: str
    face_id: str
    export_header: dict
    export_line: dict  # the seed identity's line of the export
    request_id: str  # an answer of the `analyze` caller (its key in keyed mode)
    job_id: str  # a job of the `analyze` caller


@dataclasses.dataclass(frozen=True)
class Attack:
    name: str
    route: str
    expect: tuple[int, str]
    request: Callable[[Seed], dict]  # httpx.request keyword arguments (never headers' keys)
    headers: dict = dataclasses.field(default_factory=dict)
    key: str | None = "admin"  # in keyed mode: whose key is sent (None: no key); keyless mode sends none
    mode: str = "any"
    method: str = "POST"


def _json(body) -> Callable[[Seed], dict]:
    return lambda seed: {"json": body(seed) if callable(body) else body}


def _raw(content: bytes | str, content_type: str) -> Callable[[Seed], dict]:
    data = content.encode() if isinstance(content, str) else content
    return lambda seed: {"content": data, "headers": {"content-type": content_type}}


def nested(depth: int) -> str:
    return "[" * depth + "]" * depth


# ---- gallery files ----------------------------------------------------------------------------------------

def gallery_file(header: dict, *lines: dict | str | bytes) -> bytes:
    def encode(line) -> bytes:
        if isinstance(line, bytes):
            return line
        return (line if isinstance(line, str) else json.dumps(line)).encode("utf-8", "surrogatepass")
    return b"\n".join(encode(line) for line in (header, *lines)) + b"\n"


def _import(build: Callable[[Seed], bytes]) -> Callable[[Seed], dict]:
    return lambda seed: {"files": [("file", ("gallery.jsonl", build(seed), "application/x-ndjson"))]}


def new_line(seed: Seed, identity_id: str = "00000000-0000-7000-8000-000000000001",
             face_id: str = "00000000-0000-7000-8000-000000000002", **changes) -> dict:
    """A well-formed identity line with fresh ids: the seed's line with its ids replaced, then `changes`
    (keys of the line, or `face__<key>` for its face)."""
    line = json.loads(json.dumps(seed.export_line))
    line.update(id=identity_id, name="Imported")
    face = line["faces"][0]
    face.update(id=face_id)
    face.pop("thumbnail", None)
    face.pop("thumbnail_frame", None)
    for key, value in changes.items():
        if key.startswith("face__"):
            face[key[len("face__"):]] = value
        else:
            line[key] = value
    return line


def vector(values: np.ndarray) -> str:
    return base64.b64encode(np.asarray(values, dtype="<f4").tobytes()).decode("ascii")


def _dimension(seed: Seed) -> int:
    return int(seed.export_header["model"]["dimension"])


def surrogate_line(seed: Seed, where: str) -> str:
    """A line whose name or metadata key holds a lone surrogate (valid JSON text, unencodable as UTF-8)."""
    text = json.dumps(new_line(seed, name="SURROGATE", metadata={"KEY": "v"}))
    return text.replace('"SURROGATE"' if where == "name" else '"KEY"', '"\\ud800"')


def good_lines_then_bad(seed: Seed, good: int = 501) -> bytes:
    lines = [new_line(seed, f"00000000-0000-7000-8000-{i:012x}", f"00000000-0000-7001-8000-{i:012x}")
             for i in range(1, good + 1)]
    return gallery_file(seed.export_header, *lines, surrogate_line(seed, "name"))


# ---- archives ----------------------------------------------------------------------------------------------

def encrypted_zip() -> bytes:
    return marked_encrypted(zip_bytes({"face.jpg": good_jpeg()}))


def corrupt_deflate_zip() -> bytes:
    data = bytearray(zip_bytes({"face.jpg": good_jpeg()}, zipfile.ZIP_DEFLATED))
    start = data.find(b"PK\x03\x04") + 30 + len("face.jpg")
    for offset in range(start + 10, start + 60):
        data[offset] ^= 0x5A
    return bytes(data)


def _job_archive(build: Callable[[], bytes]) -> Callable[[Seed], dict]:
    return lambda seed: {"files": [("archive", ("photos.zip", build(), "application/zip"))]}


def _uploads(count: int) -> Callable[[Seed], dict]:
    tiny = good_jpeg()
    return lambda seed: {"files": [("images", (f"{i}.jpg", tiny, "image/jpeg")) for i in range(count)]}


# ---- the corpus ------------------------------------------------------------------------------------------

def attacks() -> list[Attack]:
    face = good_jpeg()
    corpus = [
        # creating identities: names, metadata, bodies
        Attack("create without name", "/identities/create", INVALID, _json({"metadata": {}})),
        Attack("create with empty name", "/identities/create", INVALID, _json({"name": "  "})),
        Attack("create with 201-char name", "/identities/create", (400, "name_too_long"), _json({"name": "x" * 201})),
        Attack("create with numeric name", "/identities/create", INVALID, _json({"name": 123})),
        Attack("create with lone surrogate name", "/identities/create", INVALID,
               _raw('{"name": "\\ud800"}', "application/json")),
        Attack("create with metadata a list", "/identities/create", INVALID, _json({"name": "A", "metadata": [1]})),
        Attack("create with 19 MB metadata", "/identities/create", METADATA_SIZE,
               _json({"name": "A", "metadata": {"blob": "x" * 19_000_000}})),
        Attack("create with 8 KiB metadata", "/identities/create", METADATA_SIZE,
               _json({"name": "A", "metadata": {"blob": "x" * 8192}})),
        Attack("create with metadata 10 deep", "/identities/create", METADATA_DEPTH,
               _raw('{"name": "A", "metadata": ' + '{"a": ' * 10 + "1" + "}" * 10 + "}", "application/json")),
        Attack("create with lone surrogate metadata key", "/identities/create", INVALID,
               _raw('{"name": "A", "metadata": {"\\udc00": 1}}', "application/json")),
        Attack("create with NaN in metadata", "/identities/create", INVALID,
               _raw('{"name": "A", "metadata": {"n": NaN}}', "application/json")),
        Attack("create body nested 10000 deep", "/identities/create", INVALID,
               _raw('{"name": "A", "metadata": {"a": ' + nested(10_000) + "}}", "application/json")),
        Attack("create body not JSON", "/identities/create", INVALID, _raw(b"{name: A", "application/json")),
        Attack("create body a JSON array", "/identities/create", INVALID, _raw(b'["A"]', "application/json")),
        Attack("create as text/plain JSON", "/identities/create", UNSUPPORTED, _raw('{"name": "A"}', "text/plain")),
        Attack("create as form", "/identities/create", UNSUPPORTED,
               _raw("name=A", "application/x-www-form-urlencoded")),
        Attack("create from a cross-site Origin", "/identities/create", CROSS_SITE, _json({"name": "A"}),
               headers={"origin": "https://evil.example"}),
        Attack("create with Sec-Fetch-Site cross-site", "/identities/create", CROSS_SITE, _json({"name": "A"}),
               headers={"sec-fetch-site": "cross-site"}),
        Attack("create with a rebound Host", "/identities/create", HOST, _json({"name": "A"}),
               headers={"host": "rebind.evil.example:3000"}, mode="keyless"),
        # adding faces
        Attack("add faces to an unknown identity", "/identities/add_faces", NOT_FOUND,
               lambda seed: {"data": {"identity_id": "00000000-0000-7000-8000-00000000dead"},
                             "files": [("images", ("a.jpg", face, "image/jpeg"))]}),
        Attack("add faces with a box count mismatch", "/identities/add_faces", (400, "boxes_mismatch"),
               lambda seed: {"data": {"identity_id": seed.identity_id,
                                      "boxes": json.dumps([None, None])},
                             "files": [("images", ("a.jpg", face, "image/jpeg"))]}),
        Attack("add faces of a non-image", "/identities/add_faces", (400, "invalid_image"),
               lambda seed: {"data": {"identity_id": seed.identity_id},
                             "files": [("images", ("a.jpg", b"<html>not an image</html>", "image/jpeg"))]}),
        Attack("add faces from a cross-site form", "/identities/add_faces", CROSS_SITE,
               lambda seed: {"data": {"identity_id": seed.identity_id},
                             "files": [("images", ("a.jpg", face, "image/jpeg"))]},
               headers={"origin": "http://attacker.example", "sec-fetch-site": "cross-site"}),
        # reading and deleting
        Attack("list with limit 0", "/identities", INVALID, _json({"limit": 0})),
        Attack("list with limit 10^6", "/identities", INVALID, _json({"limit": 1_000_000})),
        Attack("get an unknown identity", "/identities/get", NOT_FOUND,
               _json({"identity_id": "00000000-0000-7000-8000-00000000dead"})),
        Attack("thumbnail of an unknown face", "/identities/face_thumbnail", NOT_FOUND,
               _json({"face_id": "00000000-0000-7000-8000-00000000dead"})),
        Attack("delete an unknown identity", "/identities/delete", NOT_FOUND,
               _json({"identity_id": "00000000-0000-7000-8000-00000000dead"})),
        Attack("delete an unknown face", "/identities/delete_face", NOT_FOUND,
               _json({"face_id": "00000000-0000-7000-8000-00000000dead"})),
        Attack("delete as form", "/identities/delete", UNSUPPORTED,
               lambda seed: {"content": f"identity_id={seed.identity_id}".encode(),
                             "headers": {"content-type": "application/x-www-form-urlencoded"}}),
        Attack("delete as text/plain JSON", "/identities/delete", UNSUPPORTED,
               lambda seed: {"content": json.dumps({"identity_id": seed.identity_id}).encode(),
                             "headers": {"content-type": "text/plain"}}),
        Attack("delete from a cross-site Origin", "/identities/delete", CROSS_SITE,
               _json(lambda seed: {"identity_id": seed.identity_id}), headers={"origin": "https://evil.example"}),
        Attack("export with a rebound Host", "/gallery/export", HOST, _json({}),
               headers={"host": "rebind.evil.example:3000"}, mode="keyless"),
        # importing
        Attack("import without a file", "/gallery/import", (400, "no_file"),
               lambda seed: {"files": [("notes", ("notes.txt", b"not the gallery", "text/plain"))]}),
        Attack("import as a form", "/gallery/import", UNSUPPORTED, lambda seed: {"data": {"file": "x"}}),
        Attack("import an empty file", "/gallery/import", INVALID, _import(lambda seed: b"")),
        Attack("import a header that is not JSON", "/gallery/import", INVALID, _import(lambda seed: b"{\n")),
        Attack("import another format", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file({**seed.export_header, "format": "other"}))),
        Attack("import another model", "/gallery/import", (409, "model_mismatch"),
               _import(lambda seed: gallery_file({**seed.export_header,
                                                  "model": {**seed.export_header["model"], "version": "999"}}))),
        Attack("import model a string", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file({**seed.export_header, "model": "faceres"}))),
        Attack("import model a list", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file({**seed.export_header, "model": ["faceres", 1]}))),
        Attack("import a line that is not JSON", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file(seed.export_header, "{oops"))),
        Attack("import a line that is a list", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file(seed.export_header, [1, 2]))),
        Attack("import faces a string", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed, faces="abc")))),
        Attack("import faces [1]", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed, faces=[1])))),
        Attack("import faces {}", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed, faces={})))),
        Attack("import faces [null]", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed, faces=[None])))),
        Attack("import a vector of 1e-30s", "/gallery/import", EMBEDDING,
               _import(lambda seed: gallery_file(seed.export_header, new_line(
                   seed, face__vector=vector(np.full(_dimension(seed), 1e-30)))))),
        Attack("import a vector of zeros", "/gallery/import", EMBEDDING,
               _import(lambda seed: gallery_file(seed.export_header, new_line(
                   seed, face__vector=vector(np.zeros(_dimension(seed))))))),
        Attack("import a vector with NaN", "/gallery/import", EMBEDDING,
               _import(lambda seed: gallery_file(seed.export_header, new_line(
                   seed, face__vector=vector(np.r_[np.nan, np.ones(_dimension(seed) - 1)]))))),
        Attack("import a vector with inf", "/gallery/import", EMBEDDING,
               _import(lambda seed: gallery_file(seed.export_header, new_line(
                   seed, face__vector=vector(np.r_[np.inf, np.ones(_dimension(seed) - 1)]))))),
        Attack("import a vector with one tiny value", "/gallery/import", EMBEDDING,
               _import(lambda seed: gallery_file(seed.export_header, new_line(
                   seed, face__vector=vector(np.r_[1e-30, np.zeros(_dimension(seed) - 1)]))))),
        Attack("import a vector of the wrong size", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file(seed.export_header, new_line(
                   seed, face__vector=vector(np.ones(7)))))),
        Attack("import a vector that is not base64", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed, face__vector="!!!")))),
        Attack("import the seed's identity id with another face (hijack)", "/gallery/import",
               (409, "identity_exists"),
               _import(lambda seed: gallery_file(seed.export_header, new_line(
                   seed, identity_id=seed.identity_id, name=seed.export_line["name"])))),
        Attack("import the seed's face id under a new identity", "/gallery/import", (409, "face_exists"),
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed, face_id=seed.face_id)))),
        Attack("import one identity id twice", "/gallery/import", DUPLICATE,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed),
                                                 new_line(seed, face_id="00000000-0000-7000-8000-0000000000f2")))),
        Attack("import one face id twice", "/gallery/import", DUPLICATE,
               _import(lambda seed: gallery_file(
                   seed.export_header, new_line(seed),
                   new_line(seed, identity_id="00000000-0000-7000-8000-0000000000f1")))),
        Attack("import a line nested 6000 deep", "/gallery/import", TOO_DEEP,
               _import(lambda seed: gallery_file(seed.export_header, nested(6000)))),
        Attack("import a lone surrogate name", "/gallery/import", TEXT,
               _import(lambda seed: gallery_file(seed.export_header, surrogate_line(seed, "name")))),
        Attack("import a lone surrogate metadata key", "/gallery/import", TEXT,
               _import(lambda seed: gallery_file(seed.export_header, surrogate_line(seed, "key")))),
        Attack("import 501 good lines then a bad one", "/gallery/import", TEXT,
               _import(good_lines_then_bad)),
        Attack("import 8 KiB of metadata", "/gallery/import", METADATA_SIZE,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed, metadata={"x": "y" * 8192})))),
        Attack("import a thumbnail that is HTML", "/gallery/import", THUMBNAIL,
               _import(lambda seed: gallery_file(seed.export_header, new_line(
                   seed, face__thumbnail=base64.b64encode(b"<script>alert(1)</script>").decode())))),
        Attack("import a thumbnail frame without its thumbnail", "/gallery/import", THUMBNAIL,
               _import(lambda seed: gallery_file(seed.export_header, new_line(
                   seed, face__thumbnail_frame={"x1": 0, "y1": 0, "scale": 1})))),
        Attack("import a thumbnail frame that enlarges it", "/gallery/import", THUMBNAIL,
               _import(lambda seed: gallery_file(seed.export_header, new_line(
                   seed, face__thumbnail=base64.b64encode(save(Image.new("RGB", (16, 16)), "JPEG")).decode(),
                   face__thumbnail_frame={"x1": 0, "y1": 0, "scale": 4})))),
        Attack("import a thumbnail that is not base64", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed, face__thumbnail="%%%")))),
        Attack("import a reversed box", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed, face__box=[10, 10, 5, 5])))),
        Attack("import a bad sha256", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed, face__image_sha256="00")))),
        Attack("import a bad time", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed, created_at="yesterday")))),
        Attack("import an id that is no UUID", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed, identity_id="../../etc")))),
        Attack("import an empty name", "/gallery/import", INVALID,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed, name="")))),
        Attack("import from a cross-site form", "/gallery/import", CROSS_SITE,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed))),
               headers={"origin": "https://evil.example"}),
        # jobs
        Attack("job of an encrypted zip", "/jobs/submit", ARCHIVE, _job_archive(encrypted_zip)),
        Attack("job of a corrupt deflate stream", "/jobs/submit", ARCHIVE, _job_archive(corrupt_deflate_zip)),
        Attack("job of a file that is no zip", "/jobs/submit", ARCHIVE, _job_archive(lambda: b"PK\x05\x06 nope")),
        Attack("job of a truncated zip", "/jobs/submit", ARCHIVE,
               _job_archive(lambda: zip_bytes({"face.jpg": good_jpeg()})[:100])),
        Attack("job of 1001 uploads", "/jobs/submit", (422, "job_images"), _uploads(1001)),
        Attack("job given two ways", "/jobs/submit", (400, "ambiguous_image"),
               lambda seed: {"files": [("images", ("a.jpg", face, "image/jpeg")),
                                       ("archive", ("p.zip", zip_bytes({"a.jpg": face}), "application/zip"))]}),
        Attack("status of an unknown job", "/jobs/status", (404, "unknown_job"),
               _json({"job_id": "00000000-0000-7000-8000-00000000dead"})),
        Attack("cancel an unknown job", "/jobs/cancel", (404, "unknown_job"),
               _json({"job_id": "00000000-0000-7000-8000-00000000dead"})),
        Attack("cancel as form", "/jobs/cancel", UNSUPPORTED,
               lambda seed: {"content": f"job_id={seed.job_id}".encode(),
                             "headers": {"content-type": "application/x-www-form-urlencoded"}}),
        # feedback
        Attack("correct an unknown answer", "/feedback", (404, "unknown_request"),
               _json({"request_id": "00000000-0000-7000-8000-00000000dead", "field": "emotion",
                      "correct": "sad", "face_index": 0}), key="analyze"),
        Attack("correct an unknown field", "/feedback", (400, "unknown_field"),
               _json(lambda seed: {"request_id": seed.request_id, "field": "shoe_size", "correct": "9",
                                   "face_index": 0}), key="analyze"),
        Attack("correct a face that is not there", "/feedback", (400, "face_index_out_of_range"),
               _json(lambda seed: {"request_id": seed.request_id, "field": "emotion", "correct": "sad",
                                   "face_index": 7}), key="analyze"),
        Attack("correct an age with text", "/feedback", (400, "invalid_value"),
               _json(lambda seed: {"request_id": seed.request_id, "field": "age", "correct": "old",
                                   "face_index": 0}), key="analyze"),
        Attack("correct with a 100 KB comment", "/feedback", (400, "comment_too_long"),
               _json(lambda seed: {"request_id": seed.request_id, "field": "emotion", "correct": "sad",
                                   "face_index": 0, "comment": "=1+1" * 25_000}), key="analyze"),
        Attack("correct as text/plain JSON", "/feedback", UNSUPPORTED,
               lambda seed: {"content": json.dumps({"request_id": seed.request_id, "field": "emotion",
                                                    "correct": "sad", "face_index": 0}).encode(),
                             "headers": {"content-type": "text/plain"}}, key="analyze"),
        # the page and paths
        Attack("the page under a rebound Host", "/", HOST, lambda seed: {}, headers={"host": "evil.example"},
               method="GET", mode="keyless"),
        Attack("an unknown route", "/identities/merge", NOT_FOUND, _json({})),
        # keys and scopes
        Attack("export without a key", "/gallery/export", UNAUTHORIZED, _json({}), key=None, mode="keyed"),
        Attack("create without a key", "/identities/create", UNAUTHORIZED, _json({"name": "A"}), key=None,
               mode="keyed"),
        Attack("export with an analyze key", "/gallery/export", MISSING_SCOPE, _json({}), key="analyze",
               mode="keyed"),
        Attack("import with an enrol key", "/gallery/import", MISSING_SCOPE,
               _import(lambda seed: gallery_file(seed.export_header, new_line(seed))), key="enrol", mode="keyed"),
        Attack("delete with an enrol key", "/identities/delete", MISSING_SCOPE,
               _json(lambda seed: {"identity_id": seed.identity_id}), key="enrol", mode="keyed"),
        Attack("create with an analyze key", "/identities/create", MISSING_SCOPE, _json({"name": "A"}),
               key="analyze", mode="keyed"),
        Attack("feedback export with an enrol key", "/feedback/export", MISSING_SCOPE, _json({}), key="enrol",
               mode="keyed"),
        Attack("audit with an analyze key", "/gallery/audit", MISSING_SCOPE, _json({}), key="analyze",
               mode="keyed"),
        Attack("correct another caller's answer", "/feedback", (404, "unknown_request"),
               _json(lambda seed: {"request_id": seed.request_id, "field": "emotion", "correct": "sad",
                                   "face_index": 0}), key="analyze2", mode="keyed"),
        Attack("read another caller's job", "/jobs/status", (404, "unknown_job"),
               _json(lambda seed: {"job_id": seed.job_id}), key="analyze2", mode="keyed"),
        Attack("cancel another caller's job", "/jobs/cancel", (404, "unknown_job"),
               _json(lambda seed: {"job_id": seed.job_id}), key="analyze2", mode="keyed"),
    ]
    names = [attack.name for attack in corpus]
    assert len(names) == len(set(names)), "attack names are unique"
    return corpus


def for_mode(keyed: bool) -> list[Attack]:
    return [attack for attack in attacks() if attack.mode in ("any", "keyed" if keyed else "keyless")]


if __name__ == "__main__":
    for attack in attacks():
        print(f"| {attack.name} | `{attack.route}` | {attack.expect[0]} `{attack.expect[1]}` | {attack.mode} |")
