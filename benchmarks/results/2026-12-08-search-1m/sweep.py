"""The 1 M gallery of benchmarks.search (same recipe, seed and probes) as a bare usearch graph of ann.py's
parameters, built with 2 threads (the benchmark's own build, one thread, took 25 min here), then searched at
growing expansion_search: recall@1 against the chunked exact ground truth and ms per face (one query at a time,
k = 36 as the gallery asks for k = 5). Run: PYTHONPATH=. .venv/bin/python benchmarks/results/2026-12-08-search-1m/sweep.py
[MODEL_DIR] (SWEEP_CONNECTIVITY=32: a graph with more links than ann.py's, sweep-connectivity32.txt)"""

import json
import os
import sys
import time

import numpy as np
from usearch.index import Index

from benchmarks.search import CACHE, noise_of, probes_of, real_embeddings, synthetic_gallery
from faceserve.gallery.ann import CONNECTIVITY, EXPANSION_ADD

SIZE, PROBES = 1_000_000, 1_000
real, model = real_embeddings(None if len(sys.argv) < 2 else __import__("pathlib").Path(sys.argv[1]), CACHE)
identity_noise, probe_noise = noise_of(model)
gallery = np.concatenate(list(synthetic_gallery(real, SIZE, identity_noise)))
picked = np.sort(np.random.default_rng(7).choice(SIZE, PROBES, replace=False))  # fill_store's probes
probes = probes_of(real, gallery[picked], probe_noise)
truth = np.argmax(np.concatenate([probes @ gallery[s:s + 50_000].T for s in range(0, SIZE, 50_000)], axis=1), axis=1)
started = time.perf_counter()
graph = Index(ndim=gallery.shape[1], metric="cos", dtype="f16", connectivity=int(os.environ.get("SWEEP_CONNECTIVITY", CONNECTIVITY)), expansion_add=EXPANSION_ADD)
graph.add(np.arange(SIZE), gallery, threads=2)
build_s = time.perf_counter() - started
print(json.dumps({"connectivity": graph.connectivity, "build_s_2_threads": round(build_s, 1)}), flush=True)
for expansion in (256, 512, 1024, 2048):
    graph.expansion_search = expansion
    found, times = [], []
    for probe in probes:
        t0 = time.perf_counter()
        found.append(int(graph.search(probe, 36, threads=1).keys[0]))
        times.append(time.perf_counter() - t0)
    print(json.dumps({"expansion_search": expansion, "recall_at_1": float(np.mean(np.array(found) == truth)),
                      "ms_p50": round(1e3 * float(np.median(times)), 3),
                      "ms_p95": round(1e3 * float(np.percentile(times, 95)), 3)}), flush=True)
