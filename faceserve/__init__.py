"""faceserve: every face of a photo found, and each one's emotion, gender and age, served fast and safely.

The packages, each with its own docstring (docs/architecture.md maps every stage to its file):

- `faceserve.models`: model roles (detectors, face heads, classifiers), their recipes, the repository.
- `faceserve.pipeline`: decoding, the stages in order, the response schema, annotation.
- `faceserve.backends`: running a model on a batch (embedded onnxruntime, Triton).
- `faceserve.http`: the HTTP edge (error shape, keys, limits, upload guard, image inputs, URL fetching).
- `faceserve.services`: the composition root, one service per concern over one `Resources` (what endpoints do).
- `faceserve.gallery`, `faceserve.feedback`, `faceserve.jobs`, `faceserve.store`: what is stored, and its answers.
- `faceserve.dev`: development servers (bentoml, Triton, PostgreSQL, the nginx cluster) and test fixtures;
  never in a bento.
- `settings.py`, `errors.py`, `cli.py`.

Importing any module is cheap: nothing loads until `Services.build` runs.
"""
