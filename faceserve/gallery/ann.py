"""The approximate index for large galleries: a usearch HNSW graph over float16 vectors, saved beside the store.

A `SavedIndex` is immutable: built once from every face of the gallery at one change of the store (its tag),
written to a folder of its own, then opened memory-mapped, so the worker processes of one machine share its
pages and a worker starts warm by reading the folder instead of every vector from the store. The faces added
since its tag are searched exactly beside it, the faces removed since are masked out of its answers
(`index.py`); when those grow past a bound a new one is made from it: its graph copied, the removed faces taken
out and the added ones inserted.

usearch rather than faiss or hnswlib (benchmarks/search.py measured the three): float16 and 8-bit vectors,
removal of keys, and a saved index that opens memory-mapped (`view`); faiss's HNSW removes nothing and maps
only flat codes, hnswlib holds float32 and copies its file into memory. A viewed usearch index must never be
written to (it crashes the process): only `build` writes, on an index of its own.

Files of one saved index (rows are usearch keys, 0..faces-1; a face's row never changes within one index):
    index.usearch        the graph and the float16 vectors
    face_ids.npy         (faces,) bytes: each row's face id
    face_order.npy       (faces,) int64: the rows sorted by face id, and sorted_face_ids.npy their ids in that
                         order (to find a removed face's row without sorting in every process)
    owners.npy           (faces,) int32: each row's identity code
    identity_ids.npy     (identities,) bytes: each code's identity id
    names.bin, name_offsets.npy   each code's name, UTF-8, and where it starts (identities + 1 offsets)
    manifest.json        written last: the tag, the store it follows, the model, the counts, each file's sha256
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1
MANIFEST = "manifest.json"
GRAPH = "index.usearch"
ARRAYS = ("face_ids", "face_order", "sorted_face_ids", "owners", "identity_ids", "name_offsets")
NAMES = "names.bin"
# HNSW parameters measured on real-embedding galleries (benchmarks/search.py): at 30k, 16 links per node left
# 0.07 % of the faces unreachable by their own vector, 24 links and 200 candidates while building none; at 100k,
# searching with 128 candidates twice ended in the wrong cluster of lookalikes (best similarity 0.31 where exact
# search found 0.77), with 256 never. At 1 M identities of embedding_dlib (128-d, 10 000 lookalikes a cluster),
# 24 links found exact search's top-1 for 98.4 % of the probes, 32 links for 99.5 % at 2.4 ms a face, its graph
# about 64 bytes a face larger (benchmarks/results/2026-12-08-search-1m/sweep*.txt).
CONNECTIVITY, EXPANSION_ADD, EXPANSION_SEARCH = 32, 200, 256


@dataclasses.dataclass(frozen=True)
class Tag:
    """What a saved index reflects: the store (its creation time: a recreated database is another store), the
    embedding model, and the change counter of the gallery at the build."""

    store: str
    model: tuple[str, str, int]
    version: int


Face = tuple[str, str, str, np.ndarray]  # face id, identity id, identity name, unit vector


class SavedIndex:
    """One saved index, opened memory-mapped; readers only."""

    def __init__(self, folder: Path, tag: Tag, graph, arrays: dict[str, np.ndarray], names: np.ndarray):
        self.folder, self.tag, self._graph = folder, tag, graph
        self.face_ids, self.face_order, self.owners = arrays["face_ids"], arrays["face_order"], arrays["owners"]
        self._sorted_face_ids = arrays["sorted_face_ids"]
        self.identity_ids, self._name_offsets, self._names = arrays["identity_ids"], arrays["name_offsets"], names

    def __len__(self) -> int:
        """Rows: every face it was built with, those removed by a later build included (they keep their row)."""
        return len(self.face_ids)

    @property
    def faces(self) -> int:
        """The faces its graph holds."""
        return len(self._graph)

    def identity(self, code: int) -> tuple[str, str]:
        start, stop = self._name_offsets[code], self._name_offsets[code + 1]
        return self.identity_ids[code].decode(), bytes(self._names[start:stop]).decode()

    def rows_of(self, face_ids: Iterable[str]) -> np.ndarray:
        """The rows of those faces that this index holds."""
        wanted = np.array([face_id.encode() for face_id in face_ids], dtype=self.face_ids.dtype)
        if not len(wanted) or not len(self):
            return np.zeros(0, np.int64)
        sorted_ids = self._sorted_face_ids
        at = np.minimum(np.searchsorted(sorted_ids, wanted), len(self) - 1)
        return self.face_order[at[sorted_ids[at] == wanted]]

    def search(self, queries: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        """The `count` nearest rows of each unit query (n, count) and their cosine similarities; a row of -1
        where the graph found fewer."""
        matches = self._graph.search(queries, max(1, min(count, self.faces)), threads=1)
        # One query gives `Matches` (as many as found), several `BatchMatches` (padded, with `counts`).
        keys = np.asarray(matches.keys, np.int64).reshape(len(queries), -1)
        similarities = 1.0 - np.asarray(matches.distances, np.float32).reshape(len(queries), -1)
        counts = np.asarray(getattr(matches, "counts", [keys.shape[1]])).reshape(-1, 1)
        found = np.arange(keys.shape[1])[None, :] < counts
        return np.where(found, keys, -1), np.where(found, similarities, -np.inf)


def build(parent: Path, tag: Tag, faces: Iterable[Face], dimension: int, base: SavedIndex | None = None,
          removed_rows: np.ndarray | None = None) -> SavedIndex:
    """Write a saved index into a new folder under `parent` (named by the tag's version), atomically: a reader
    sees the whole folder or none. It holds `faces`, and with a `base` the base's faces too but its
    `removed_rows`: the base's graph copied into memory, those rows removed from it and the new faces inserted,
    rather than a graph built anew. Returns it opened."""
    from usearch.index import Index

    parent.mkdir(mode=0o700, parents=True, exist_ok=True)  # the vectors are biometric data
    work = Path(tempfile.mkdtemp(prefix=f".build-{tag.version}-", dir=parent))
    try:
        if base is None:
            graph = Index(ndim=dimension, metric="cos", dtype="f16", connectivity=CONNECTIVITY,
                          expansion_add=EXPANSION_ADD, expansion_search=EXPANSION_SEARCH)
            face_ids, owners, identity_ids, names = [], [], [], []
        else:
            graph = Index.restore(str(base.folder / GRAPH))
            graph.expansion_add, graph.expansion_search = EXPANSION_ADD, EXPANSION_SEARCH
            if removed_rows is not None and len(removed_rows):
                graph.remove(np.asarray(removed_rows, np.uint64))
            face_ids, owners = list(base.face_ids), list(base.owners)
            identity_ids = list(base.identity_ids)
            names = [bytes(base._names[a:b]) for a, b in zip(base._name_offsets[:-1], base._name_offsets[1:])]
        code_of = {identity_id.decode(): code for code, identity_id in enumerate(identity_ids)}
        batch: list[Face] = []

        def flush() -> None:
            if batch:
                start = len(face_ids) - len(batch)
                # One thread: usearch's concurrent inserts left 0.6 % of a clustered 3k gallery unreachable (a face
                # whose own vector does not find it); inserted one by one every face finds itself.
                graph.add(np.arange(start, start + len(batch)), np.stack([face[3] for face in batch]), threads=1)
                batch.clear()
        for face_id, identity_id, name, vector in faces:
            code = code_of.get(identity_id)
            if code is None:
                code = code_of[identity_id] = len(identity_ids)
                identity_ids.append(identity_id.encode())
                names.append(name.encode())
            face_ids.append(face_id.encode())
            owners.append(code)
            batch.append((face_id, identity_id, name, vector))
            if len(batch) == 1_000:  # between batches a stopped build's faces iterator can raise
                flush()
        flush()
        graph.save(str(work / GRAPH))
        offsets = np.zeros(len(names) + 1, np.int64)
        offsets[1:] = np.cumsum([len(name) for name in names])
        face_array = np.array(face_ids, dtype=f"S{max(map(len, face_ids), default=1)}")
        order = np.argsort(face_array, kind="stable")
        arrays = {"face_ids": face_array, "face_order": order, "sorted_face_ids": face_array[order],
                  "owners": np.array(owners, np.int32),
                  "identity_ids": np.array(identity_ids, dtype=f"S{max(map(len, identity_ids), default=1)}"),
                  "name_offsets": offsets}
        for name, array in arrays.items():
            np.save(work / f"{name}.npy", array)
        (work / NAMES).write_bytes(b"".join(names))
        manifest = {"format": FORMAT, **dataclasses.asdict(tag), "rows": len(face_ids), "faces": len(graph),
                    "sha256": {file.name: _sha256(file) for file in sorted(work.iterdir())}}
        (work / MANIFEST).write_text(json.dumps(manifest, indent=1))
        target = parent / str(tag.version)
        if target.exists():
            shutil.rmtree(target, ignore_errors=True)
        os.replace(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    opened = open_saved(target, tag.store, tag.model, tag.version, max_behind=0)
    if opened is None:
        raise RuntimeError(f"the index just saved in {target} does not open")
    return opened


def newest(parent: Path, store: str, model: tuple[str, str, int], current: int, max_behind: int) -> SavedIndex | None:
    """The newest saved index under `parent` that follows this store and model at a change from `current -
    max_behind` to `current`, whole and unaltered; None if there is none. Ones that are not are logged and
    left for `prune`."""
    if not parent.is_dir():
        return None
    versions = sorted((int(p.name) for p in parent.iterdir() if p.name.isdigit()), reverse=True)
    for version in versions:
        opened = open_saved(parent / str(version), store, model, current, max_behind)
        if opened is not None:
            return opened
    return None


def open_saved(folder: Path, store: str, model: tuple[str, str, int], current: int,
               max_behind: int) -> SavedIndex | None:
    """The saved index in `folder` opened memory-mapped, or None (logged) if it is of another store or model, at a
    change the store cannot catch it up from (after `current`, or more than `max_behind` before it), or if any
    file is missing or differs from the manifest's digest."""
    from usearch.index import Index

    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        tag = Tag(manifest["store"], tuple(manifest["model"]), int(manifest["version"]))
        if manifest.get("format") != FORMAT or tag.store != store or tag.model != tuple(model):
            log.info("gallery index: %s is of another store, model or format; not used", folder)
            return None
        if not current - max_behind <= tag.version <= current:
            log.info("gallery index: %s is at change %d, the store at %d; not used", folder, tag.version, current)
            return None
        for name, digest in manifest["sha256"].items():
            if _sha256(folder / name) != digest:
                log.warning("gallery index: %s differs from its manifest (damaged); not used", folder / name)
                return None
        expected = {GRAPH, NAMES, *(f"{name}.npy" for name in ARRAYS)}
        if not expected <= set(manifest["sha256"]):
            log.warning("gallery index: %s lacks files; not used", folder)
            return None
        arrays = {name: np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False) for name in ARRAYS}
        names = np.memmap(folder / NAMES, dtype=np.uint8, mode="r") if (folder / NAMES).stat().st_size else \
            np.zeros(0, np.uint8)
        graph = Index.restore(str(folder / GRAPH), view=True)
        if graph is not None:
            graph.expansion_search = EXPANSION_SEARCH  # not kept in the file: a restored index searches with 64
        if graph is None or len(graph) != manifest["faces"] or len(arrays["face_ids"]) != manifest["rows"]:
            log.warning("gallery index: %s does not hold the faces its manifest counts; not used", folder)
            return None
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        log.warning("gallery index: %s cannot be read (%s); not used", folder, exc)
        return None
    return SavedIndex(folder, tag, graph, arrays, names)


def prune(parent: Path, keep: SavedIndex) -> None:
    """Remove every saved index under `parent` but `keep` (a process that still maps one keeps its pages)."""
    for path in parent.iterdir():
        if path != keep.folder and (path.name.isdigit() or path.name.startswith(".build-")):
            shutil.rmtree(path, ignore_errors=True)


def _sha256(path: Path) -> str:
    with open(path, "rb") as file:
        return hashlib.file_digest(file, "sha256").hexdigest()
