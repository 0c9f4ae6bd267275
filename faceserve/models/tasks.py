"""The task vocabulary: what a model of the repository is for (its `task` parameter), declared here only.

Four tasks name a role of their own; every other task is a face head's, and names the per-face response
field it answers (`emotion`, `gender`, `age`, or any new one: no list of them exists to keep up to date).
"""

from __future__ import annotations

DETECTOR = "face_detector"  # a whole image in, faces out (one model per decoder: each is its own detector)
CLASSIFIER = "image_classifier"  # a whole image in, labels out
LANDMARKS = "landmarks"  # a face model whose points place every face before the heads run
EMBEDDING = "embedding"  # a face descriptor for the identity stage, not a response field

ROLE_TASKS = (DETECTOR, CLASSIFIER, LANDMARKS, EMBEDDING)
# Which tasks carry which of the recipe's decision thresholds (config parameters and `/models`).
SCORE_THRESHOLD_TASKS = (DETECTOR, EMBEDDING)  # detectors: keep boxes above it; embeddings: the same person
NMS_TASKS = (DETECTOR,)


def is_head(task: str) -> bool:
    """A task that is not a role of its own is a face head's, named after its response field."""
    return task not in ROLE_TASKS


def check_name(task: str) -> str:
    """A task is a role above or a response field's name, so it must be usable as one."""
    if not task.isidentifier():
        raise ValueError(f"task {task!r} is neither one of {', '.join(ROLE_TASKS)} nor a response field name "
                         f"(letters, digits and underscores)")
    return task
