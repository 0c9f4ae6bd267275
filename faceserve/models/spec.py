"""A model's recipe: what it takes (input size, colour order, scaling, crop) and what its outputs mean.

The model repository is where recipes live (`faceserve.models.repository` reads and writes them
as `config.pbtxt` parameters and `labels.txt`), so no code hard-codes a model's shape.
The defaults here are the only ones: `convert` and the repository reader both rely on them.
"""

from __future__ import annotations

import dataclasses
import math

from faceserve.models.tasks import NMS_TASKS, SCORE_THRESHOLD_TASKS


class SpecError(ValueError):
    """A model's files (or its recipe) contradict each other; the message names the model."""


@dataclasses.dataclass(frozen=True)
class CropRecipe:
    """How a face box becomes this model's input (the model's training-time recipe).

    margin: fraction of the box width/height added on every side (SSR-Net: 0.4); for an aligned crop,
        the same fraction of context around the template's face.
    pad_px: fixed pixels added on each side, (x, y) (gender mini_XCEPTION demo: 30, 60).
    stretch: min-max stretch each crop to 0..255 before scaling (SSR-Net demo).
    square: the box made a square of its longer side around its centre first (detectors' box shapes
        differ: FaceBoxes' are taller than wide, Haar's and BlazeFace's square).
    align: the face warped by a similarity transform that puts its five landmarks on the canonical
        template (`crops.ALIGNMENT_TEMPLATE`), as embedding models are trained; needs landmarks.
    template: the template `align` puts the landmarks on, by name (`crops.TEMPLATES`): "arcface" (the
        canonical one), "dlib" (dlib's face chip, where dlib's face ResNet was trained).
    """

    margin: float = 0.0
    pad_px: tuple[int, int] = (0, 0)
    stretch: bool = False
    square: bool = False
    align: bool = False
    template: str = "arcface"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    task: str  # see `faceserve.models.tasks`: a role, or a face head's response field (emotion, gender, age, ...)
    decoder: str  # the class that decodes its outputs, by name (`faceserve.models.decoder`)
    input_name: str
    height: int  # -1: any size (the model's own preprocessing picks it per image)
    width: int
    channels: int
    output_names: tuple[str, ...]
    output_dims: tuple[tuple[int, ...], ...]
    colour: str  # gray, rgb or bgr: what the model was trained on
    scale: float
    offset: float
    max_batch_size: int = 64
    crop: CropRecipe = CropRecipe()
    letterbox: bool = False
    labels: tuple[str, ...] = ()
    units: str = ""
    source: str = ""
    sha256: str = ""
    version: str = "1"
    # On CPU an image costs the same or more in a bigger batch (benchmarks/README.md, the `batch-cost`
    # table): batches only save per-call overhead, so they stop at 8 rows and wait for nobody.
    queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = (8,)  # a batch this large runs at once (Triton's preferred_batch_size)
    score_threshold: float = 0.5  # detectors: keep boxes scoring above this; embeddings: same person at or above
    nms_iou: float = 0.3  # detectors: suppress overlaps above this IoU

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.height, self.width, self.channels)

    def describe(self) -> dict:
        """Public description for the `models` endpoint."""
        return {
            "name": self.name,
            "task": self.task,
            "version": self.version,
            "input": {
                "name": self.input_name,
                "shape": [-1, self.height, self.width, self.channels],
                "dtype": "FP32",
                "colour": self.colour,
                "scale": self.scale,
                "offset": self.offset,
                "letterbox": self.letterbox,
                "crop_margin": self.crop.margin,
                "crop_pad_px": list(self.crop.pad_px),
                "crop_stretch": self.crop.stretch,
                "crop_square": self.crop.square,
                "crop_align": self.crop.align,
                "crop_template": self.crop.template,
            },
            "outputs": [
                {"name": n, "shape": [-1, *d]} for n, d in zip(self.output_names, self.output_dims)
            ],
            "decoder": self.decoder,
            **({"score_threshold": self.score_threshold} if self.task in SCORE_THRESHOLD_TASKS else {}),
            **({"nms_iou": self.nms_iou} if self.task in NMS_TASKS else {}),
            "labels": list(self.labels),
            "units": self.units,
            "max_batch_size": self.max_batch_size,
            "source": self.source,
            "sha256": self.sha256,
        }

    def check_labels(self) -> None:
        """Softmax: one label per output unit. Sigmoid: one unit and two labels (negative, positive)."""
        units = math.prod(self.output_dims[0]) if self.output_dims else 0
        count = f"{len(self.labels)} label{'' if len(self.labels) == 1 else 's'}"
        if self.decoder == "softmax" and len(self.labels) != units:
            raise SpecError(f"{self.name}: {count} for {units} softmax outputs; "
                            f"labels.txt must have one line per output")
        if self.decoder == "sigmoid" and (units, len(self.labels)) != (1, 2):
            raise SpecError(f"{self.name}: {count} for {units} sigmoid outputs; "
                            f"a sigmoid head has 1 output and 2 labels (negative, positive)")
