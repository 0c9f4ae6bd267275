"""What the service knows about a model, read from (and written to) its Triton folder.

The model repository is the single source of truth: input size, colour order,
scaling, crop recipe, output meaning and labels travel in `config.pbtxt`
parameters and `labels.txt`, so no pipeline code hard-codes a model's shape.
`convert` writes these files through `to_model_config`; the service and the
local Triton launcher read them back through `ModelSpec.load`.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

Task = Literal["face_detector", "emotion", "gender", "age", "image_classifier"]
Decoder = Literal["softmax", "sigmoid", "regression", "blazeface"]
Colour = Literal["gray", "rgb", "bgr"]

CONFIG_FILE = "config.pbtxt"
GPU_CONFIG_FILE = "configs/gpu.pbtxt"
GPU_QUEUE_DELAY_US = 2000
LABELS_FILE = "labels.txt"
MODEL_FILE = "model.onnx"
INPUT_NAME = "input"

FACE_TASKS: tuple[Task, ...] = ("emotion", "gender", "age")


class SpecError(ValueError):
    """A model's files (or its recipe) contradict each other; the message names the model."""


@dataclasses.dataclass(frozen=True)
class CropRecipe:
    """How a face box becomes this model's input (the model's training-time recipe).

    margin: fraction of the box width/height added on every side (SSR-Net: 0.4).
    pad_px: fixed pixels added on each side, (x, y) (gender mini_XCEPTION demo: 30, 60).
    stretch: min-max stretch each crop to 0..255 before scaling (SSR-Net demo).
    """

    margin: float = 0.0
    pad_px: tuple[int, int] = (0, 0)
    stretch: bool = False


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    name: str
    task: Task
    decoder: Decoder
    input_name: str
    height: int
    width: int
    channels: int
    output_names: tuple[str, ...]
    output_dims: tuple[tuple[int, ...], ...]
    max_batch_size: int
    colour: Colour
    scale: float
    offset: float
    crop: CropRecipe = CropRecipe()
    letterbox: bool = False
    labels: tuple[str, ...] = ()
    units: str = ""
    source: str = ""
    sha256: str = ""
    version: str = "1"
    queue_delay_us: int = 0
    preferred_batch_sizes: tuple[int, ...] = ()  # a batch this large runs at once (Triton's preferred_batch_size)
    score_threshold: float = 0.5  # detectors: keep boxes scoring above this
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
            },
            "outputs": [
                {"name": n, "shape": [-1, *d]} for n, d in zip(self.output_names, self.output_dims)
            ],
            "decoder": self.decoder,
            **({"score_threshold": self.score_threshold, "nms_iou": self.nms_iou}
               if self.task == "face_detector" else {}),
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

    # ---- reading ---------------------------------------------------------

    @classmethod
    def load(cls, model_dir: Path) -> "ModelSpec":
        config = read_config(model_dir / CONFIG_FILE)
        params = {k: v.string_value for k, v in config.parameters.items()}
        labels_path = model_dir / LABELS_FILE
        labels = read_labels(labels_path) if labels_path.exists() else ()
        (model_input,) = config.input
        height, width, channels = (int(d) for d in model_input.dims)
        pad_x, pad_y = (int(v) for v in params.get("crop_pad_px", "0,0").split(","))
        spec = cls(
            name=config.name,
            task=params["task"],  # type: ignore[arg-type]
            decoder=params["decoder"],  # type: ignore[arg-type]
            input_name=model_input.name,
            height=height,
            width=width,
            channels=channels,
            output_names=tuple(o.name for o in config.output),
            output_dims=tuple(tuple(int(d) for d in o.dims) for o in config.output),
            max_batch_size=config.max_batch_size,
            colour=params["colour"],  # type: ignore[arg-type]
            scale=float(params["scale"]),
            offset=float(params["offset"]),
            crop=CropRecipe(
                margin=float(params.get("crop_margin", "0")),
                pad_px=(pad_x, pad_y),
                stretch=params.get("crop_stretch", "false") == "true",
            ),
            letterbox=params.get("letterbox", "false") == "true",
            labels=labels,
            units=params.get("units", ""),
            source=params.get("source", ""),
            sha256=params.get("sha256", ""),
            version=params.get("version", "1"),
            queue_delay_us=config.dynamic_batching.max_queue_delay_microseconds,
            preferred_batch_sizes=tuple(config.dynamic_batching.preferred_batch_size),
            score_threshold=float(params.get("score_threshold", "0.5")),
            nms_iou=float(params.get("nms_iou", "0.3")),
        )
        spec.check_labels()
        return spec

    # ---- writing ---------------------------------------------------------

    def to_model_config(self, *, gpu: bool = False, instances: int = 1) -> mc.ModelConfig:
        """The canonical Triton config: real onnxruntime backend, dynamic batching."""
        config = mc.ModelConfig(
            name=self.name,
            platform="onnxruntime_onnx",
            max_batch_size=self.max_batch_size,
            default_model_filename=MODEL_FILE,
        )
        config.input.add(
            name=self.input_name,
            data_type=mc.TYPE_FP32,
            format=mc.ModelInput.FORMAT_NHWC if self.channels == 3 else mc.ModelInput.FORMAT_NONE,
            dims=list(self.input_shape),
        )
        for index, (name, dims) in enumerate(zip(self.output_names, self.output_dims)):
            output = config.output.add(name=name, data_type=mc.TYPE_FP32, dims=list(dims))
            if index == 0 and self.labels:
                output.label_filename = LABELS_FILE
        if gpu:  # a GPU's cost per image falls with the batch: let batches grow, up to max_batch_size
            config.dynamic_batching.max_queue_delay_microseconds = GPU_QUEUE_DELAY_US
        else:
            config.dynamic_batching.max_queue_delay_microseconds = self.queue_delay_us
            config.dynamic_batching.preferred_batch_size.extend(self.preferred_batch_sizes)
        config.instance_group.add(
            kind=mc.ModelInstanceGroup.KIND_GPU if gpu else mc.ModelInstanceGroup.KIND_CPU,
            count=instances,
        )
        params = {
            "task": self.task,
            "decoder": self.decoder,
            "colour": self.colour,
            "scale": repr(self.scale),
            "offset": repr(self.offset),
            "letterbox": str(self.letterbox).lower(),
            "crop_margin": repr(self.crop.margin),
            "crop_pad_px": f"{self.crop.pad_px[0]},{self.crop.pad_px[1]}",
            "crop_stretch": str(self.crop.stretch).lower(),
            "units": self.units,
            "source": self.source,
            "sha256": self.sha256,
            "version": self.version,
        }
        if self.task == "face_detector":
            params["score_threshold"] = repr(self.score_threshold)
            params["nms_iou"] = repr(self.nms_iou)
        for key, value in params.items():
            config.parameters[key].string_value = value
        return config


def read_labels(path: Path) -> tuple[str, ...]:
    """One label per line, in output order; blank lines at the end (and a missing final newline) are fine."""
    lines = path.read_text().splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return tuple(lines)


def read_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(), mc.ModelConfig())


def write_config(config: mc.ModelConfig, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text_format.MessageToString(config))


def model_dirs(repository: Path) -> list[Path]:
    """Model folders of a repository that hold a config and a built model."""
    return sorted(
        d for d in repository.iterdir()
        if (d / CONFIG_FILE).is_file() and (d / "1" / MODEL_FILE).is_file()
    )
