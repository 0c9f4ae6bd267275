"""The embedding cache (faceserve/pipeline/embedding_cache.py): the same photo embedded again skips the embedding
model and gets the very vector it got the first time; another photo is embedded by the model."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from faceserve.backends import create
from faceserve.models.repository import Repository
from faceserve.pipeline.embedding_cache import EmbeddingCache
from faceserve.pipeline.pipeline import Pipeline
from tests.support import FIXTURES

PROBES = FIXTURES / "identity" / "probe"


class CountingPipeline:
    """A real pipeline (onnxruntime, the repository's models) with an embedding cache, counting the rows the
    embedding model is asked to embed."""

    def __init__(self, repository_path, cache: EmbeddingCache | None):
        self.loop = asyncio.new_event_loop()
        repo = Repository.load(repository_path)
        self.pipeline = Pipeline(repo, create("onnxruntime", repo.path), embedding_cache=cache)
        self.pipeline.require_embedding()
        self.embedded_rows = 0
        backend, embedding = self.pipeline.backend, self.pipeline.embedding.spec
        infer = backend.infer

        async def counting(spec, batch):
            if spec == embedding:
                self.embedded_rows += len(batch)
            return await infer(spec, batch)

        backend.infer = counting
        self.run(self.pipeline.start())

    def run(self, coroutine):
        return self.loop.run_until_complete(coroutine)

    def embed(self, image: np.ndarray) -> np.ndarray:
        return self.run(self.pipeline.embed(image, self.run(self.pipeline.locate(image))))

    def close(self):
        self.run(self.pipeline.backend.close())
        self.loop.close()


@pytest.fixture(scope="module")
def photos(fixtures):
    from faceserve.dev.photos import load_rgb

    if not PROBES.is_dir():
        pytest.skip(f"{PROBES} is absent")
    return {name: load_rgb(PROBES / name) for name in ("obama1.jpg", "kit_with_rose.jpg", "lin-manuel-miranda.png")}


@pytest.fixture(scope="module")
def cached(repository, photos):
    made = CountingPipeline(repository, EmbeddingCache(entries=16))
    if made.pipeline.embedding is None:
        pytest.skip("the repository has no embedding model")
    yield made
    made.close()


@pytest.fixture(scope="module")
def uncached(repository, photos):
    made = CountingPipeline(repository, None)
    yield made
    made.close()


def test_the_same_photo_again_is_the_identical_vector_without_the_model(cached, uncached, photos):
    cache = cached.pipeline.embedding_cache
    first = cached.embed(photos["obama1.jpg"])
    assert first.shape == (1, cached.pipeline.embedding.dimension) and cached.embedded_rows == 1
    assert (cache.hits, cache.misses, len(cache)) == (0, 1, 1)

    again = cached.embed(photos["obama1.jpg"])
    assert cached.embedded_rows == 1  # the model was not called
    assert (cache.hits, cache.misses) == (1, 1)
    assert np.array_equal(again, first) and again.dtype == np.float32
    # what the model says for the face without any cache
    np.testing.assert_allclose(first, uncached.embed(photos["obama1.jpg"]), atol=1e-6)

    # a different photo misses, and is not the first photo's vector
    other = cached.embed(photos["lin-manuel-miranda.png"])
    assert cached.embedded_rows == 2 and (cache.hits, cache.misses, len(cache)) == (1, 2, 2)
    assert float(other[0] @ first[0]) < 0.9


def test_a_photo_of_two_faces_asks_the_model_only_for_the_faces_not_seen(cached, photos):
    cache = cached.pipeline.embedding_cache
    both = cached.embed(photos["kit_with_rose.jpg"])
    rows, hits = cached.embedded_rows, cache.hits
    assert len(both) == 2
    # `analyze` with identify embeds in the same round as the other heads: the two faces now come from the cache
    analysis, vectors = cached.run(cached.pipeline.analyze_and_embed(photos["kit_with_rose.jpg"]))
    assert cached.embedded_rows == rows and cache.hits == hits + 2
    assert np.array_equal(vectors, both) and len(analysis.faces) == 2


def test_the_least_recently_used_face_leaves_a_full_cache(cached):
    from faceserve.models.heads import EmbeddingHead

    head: EmbeddingHead = cached.pipeline.embedding
    cache = EmbeddingCache(entries=2)
    rows = np.stack([np.full(head.spec.input_shape, value, np.float32) for value in (0.0, 1.0, 2.0)])
    keys = cache.keys(head, rows)
    assert len(set(keys)) == 3 and keys == cache.keys(head, rows.copy())  # a digest of the pixels, not the array
    for key, value in zip(keys[:2], (0.0, 1.0)):
        cache.put(key, np.full(4, value, np.float32))
    assert cache.get(keys[0]) is not None  # now the most recently used
    cache.put(keys[2], np.full(4, 2.0, np.float32))
    assert cache.get(keys[1]) is None and len(cache) == 2
    kept = cache.get(keys[0])
    assert kept.tolist() == [0.0] * 4 and not kept.flags.writeable  # no caller can change what the next one reads
    with pytest.raises(ValueError, match="at least one face"):
        EmbeddingCache(entries=0)
