"""Development servers and test fixtures: what the tests, the benchmarks and a laptop run, never a deployment.

- `devserver.py`: a real local `bentoml serve` on 127.0.0.1 (free ports, process trees, cold-start time).
- `triton_local/`: a real local Triton (CPU, Python backend over onnxruntime) and its generated repository.
- `postgres_local.py`: a real local PostgreSQL (Debian's package) for the store tests and the cluster.
- `cluster/`: nginx in front of several `bentoml serve` instances on one Triton and one PostgreSQL
  (`python -m faceserve.dev.cluster`, `make cluster`).
- `kustomize.py`: bentos/kubernetes/ rendered without kubectl.
- `lifecycle.py`: the one way these servers start and stop in a `with` block.
- `fixtures.py`, `photos.py`, `accuracy.py`: where the shared fixtures are, the real photos, and the labelled
  detection set with the one way a detector is judged on it (tests and benchmarks alike).

Both bentofiles exclude this folder with one line (`faceserve/dev/`), and tests/integration/test_bentos.py
checks that a built bento holds none of it; nothing outside it, tests/, benchmarks/ and convert/ imports it.
The variables read here (FACESERVE_FIXTURES, FACESERVE_TRITON_ENV) are the development tools' own; the
service's FACESERVE_* settings are read by `faceserve.settings` alone.
"""
