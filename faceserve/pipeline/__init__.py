"""The path of one photo through the models, in order, and what comes back.

- `imaging.py`: bytes -> upright RGB pixels, every limit checked on what is really decoded; rotation
  and encoding back.
- `pipeline.py`: `Pipeline.analyze` — detect once, each head's crops in one batched call per model,
  one typed answer per face; `classify` for whole-image classifiers.
- `schemas.py`: one photo's analysis as answered (`Analysis`, `Face`, `Classification`).
- `identity.py`: the identity stage (enrol, verify, identify against the gallery) and its answers.
- `annotate.py`: the photo with each face boxed and captioned.

Not here: what a model is and how its outputs are read (`faceserve.models`), running it
(`faceserve.backends`), where the bytes come from (`faceserve.http`).
"""
