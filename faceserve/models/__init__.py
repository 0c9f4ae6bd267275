"""Model roles and their recipes: what each kind of model takes from an image and what its answer means.

A role is one small interface, and each model family is one class behind it, found by name in
a registry that reads the model repository (as insightface's model router does):

- `detectors/`: a whole image in, faces out (`Detector.detect` -> `Detection`: box, score, keypoints).
  Each detector module owns its preprocessing and its output decoding.
- `heads/`: a model that looks at one face (`Head`: its crop batch, its output decoding), one
  module per decoder kind; each head answers one per-face field of the response.
- `landmarks.py`: where each face's features are, before the heads run.
- `classifier.py`: a whole image in, labels out.
- `tasks.py`: the task vocabulary (what a model is for); `decoder.py`: the decoder vocabulary, every class
  that decodes a model's outputs registered by name with how `convert`'s parity check compares its runs.
- `crops.py`: the recipe operations every role uses (crop margins, letterbox, colour order, scaling).
- `spec.py`: `ModelSpec`, a model's recipe; `repository.py`: the model repository's layout and the
  one table between a recipe and its `config.pbtxt`, and the built models by role.

Not here: running a model (`faceserve.backends`), the order of the stages (`faceserve.pipeline`),
anything HTTP (`faceserve.http`).
"""
