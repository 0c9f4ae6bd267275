"""python -m benchmarks.search_libraries [--size N]

How the gallery's approximate index was chosen: usearch, faiss-cpu and hnswlib side by side on one synthetic
gallery of real embeddings (benchmarks/search.py says how it is made), each as an HNSW graph of 16 links per node
built with 128 candidates and searched with 64: build seconds (2 threads), ms per face (one query at a time, one
thread) and recall@1 against exact search. Only usearch is a dependency of the service; the others are measured
where installed (`.venv/bin/pip install faiss-cpu==1.15.1 hnswlib==0.8.0`; hnswlib builds from source) and
skipped otherwise.
"""

from __future__ import annotations

import argparse
import importlib.util
import time

import numpy as np

from benchmarks.search import CACHE, noise_of, probes_of, real_embeddings, synthetic_gallery


def _usearch(dtype: str):
    def build(gallery: np.ndarray):
        from usearch.index import Index
        index = Index(ndim=gallery.shape[1], metric="cos", dtype=dtype, connectivity=16, expansion_add=128,
                      expansion_search=64)
        index.add(np.arange(len(gallery)), gallery, threads=2)
        return lambda query: int(index.search(query, 1, threads=1).keys[0])
    return build


def _faiss(quantizer: str):
    def build(gallery: np.ndarray):
        import faiss
        faiss.omp_set_num_threads(2)
        index = faiss.IndexHNSWSQ(gallery.shape[1], getattr(faiss.ScalarQuantizer, quantizer), 16,
                                  faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = 128
        index.train(gallery)
        index.add(gallery)
        index.hnsw.efSearch = 64
        faiss.omp_set_num_threads(1)
        return lambda query: int(index.search(query[None, :], 1)[1][0][0])
    return build


def _hnswlib(gallery: np.ndarray):
    import hnswlib
    index = hnswlib.Index(space="ip", dim=gallery.shape[1])
    index.init_index(max_elements=len(gallery), ef_construction=128, M=16)
    index.set_num_threads(2)
    index.add_items(gallery, np.arange(len(gallery)))
    index.set_ef(64)
    index.set_num_threads(1)
    return lambda query: int(index.knn_query(query[None, :], 1)[0][0][0])


CANDIDATES = {"usearch float16": ("usearch", _usearch("f16")), "usearch int8": ("usearch", _usearch("i8")),
              "faiss HNSW SQ fp16": ("faiss", _faiss("QT_fp16")), "faiss HNSW SQ 8-bit": ("faiss", _faiss("QT_8bit")),
              "hnswlib float32": ("hnswlib", _hnswlib)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.search_libraries", description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=20_000)
    args = parser.parse_args(argv)
    real, model = real_embeddings(cache=CACHE)
    identity_noise, probe_noise = noise_of(model)
    gallery = np.concatenate(list(synthetic_gallery(real, args.size, identity_noise)))
    picked = np.random.default_rng(7).choice(args.size, 500, replace=False)
    probes = probes_of(real, gallery[picked], probe_noise)
    exact = np.argmax(probes @ gallery.T, axis=1)
    print(f"| library | build s | ms per face | recall@1 vs exact ({len(probes)} probes, {args.size:,} identities) |")
    print("|---|---|---|---|")
    for name, (module, build) in CANDIDATES.items():
        if importlib.util.find_spec(module) is None:
            print(f"| {name} | not installed | | |")
            continue
        started = time.perf_counter()
        search = build(gallery)
        built = time.perf_counter() - started
        started = time.perf_counter()
        found = np.array([search(probe) for probe in probes])
        per_face = 1e3 * (time.perf_counter() - started) / len(probes)
        print(f"| {name} | {built:.1f} | {per_face:.3f} | {100 * np.mean(found == exact):.2f} % |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
