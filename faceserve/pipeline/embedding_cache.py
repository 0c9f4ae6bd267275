"""Embeddings already computed, by the hash of the aligned crop they were computed from: the same photo identified
again (a client retrying, a camera frame that did not change, a batch holding a photo twice) skips the embedding
model, which costs ~25x every other head per face (docs/identity.md, "What an embedding costs").

The key is the crop the model would see (after alignment, colour order and scaling), not the photo: two photos
that differ anywhere outside the face still hit, a photo recompressed or shifted by one pixel misses. It holds
unit vectors of faces seen recently in this worker's memory only: nothing of it is written or logged, and a
worker's restart forgets it.
"""

from __future__ import annotations

import collections
import hashlib
import threading
from typing import Awaitable, Callable

import numpy as np

from faceserve.models.heads import EmbeddingHead
from faceserve.models.versions import model_ref

DEFAULT_ENTRIES = 4096  # faces: 16 MB per worker at faceres' 1024 floats (FACESERVE_EMBEDDING_CACHE)


class EmbeddingCache:
    """A bounded LRU of unit embeddings per (model version, crop digest); thread-safe."""

    def __init__(self, entries: int = DEFAULT_ENTRIES):
        if entries < 1:
            raise ValueError(f"an embedding cache holds at least one face, got {entries}")
        self.entries = entries
        self._vectors: collections.OrderedDict[bytes, np.ndarray] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    @staticmethod
    def keys(head: EmbeddingHead, batch: np.ndarray) -> list[bytes]:
        """One digest per crop row, salted with the model's name and version (another version embeds otherwise)."""
        salt = model_ref(head.spec.name, head.spec.version).encode()[:16]  # blake2b's salt is at most 16 bytes
        rows = np.ascontiguousarray(batch)
        return [hashlib.blake2b(row.tobytes(), digest_size=16, salt=salt).digest() for row in rows]

    def __len__(self) -> int:
        return len(self._vectors)

    def get(self, key: bytes) -> np.ndarray | None:
        with self._lock:
            vector = self._vectors.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._vectors.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, key: bytes, vector: np.ndarray) -> None:
        stored = np.array(vector, dtype=np.float32)  # a copy nobody else holds, frozen: every hit reads the same
        stored.setflags(write=False)
        with self._lock:
            self._vectors[key] = stored
            self._vectors.move_to_end(key)
            while len(self._vectors) > self.entries:
                self._vectors.popitem(last=False)

    async def embed(self, head: EmbeddingHead, batch: np.ndarray, keys: list[bytes],
                    infer: Callable[[np.ndarray], Awaitable[dict[str, np.ndarray]]]) -> np.ndarray:
        """The (rows, dimension) unit embeddings of `batch` (whose rows' digests are `keys`): the cached ones as
        they were stored, the others from one `infer` call on those rows only."""
        found = [self.get(key) for key in keys]
        missing = [i for i, vector in enumerate(found) if vector is None]
        if missing:
            computed = head.decode(await infer(batch[missing]))
            for i, vector in zip(missing, computed):
                self.put(keys[i], vector)
                found[i] = vector
        return np.stack(found).astype(np.float32, copy=False)
