"""Build model folders: fetch, convert, check parity, write config, labels and model."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path

from tqdm import tqdm

from convert import artifacts
from convert.parity import DEFAULT_RAW_TOLERANCE, DEFAULT_TOLERANCE
from faceserve.spec import (CONFIG_FILE, GPU_CONFIG_FILE, LABELS_FILE, MODEL_FILE, CropRecipe,
                            ModelSpec, SpecError, write_config)

log = logging.getLogger("convert")

# Bump when a change here changes what is written for the same manifest entry.
CONVERTER_VERSION = "3"
BUILD_RECORD = "build.json"
DEFAULT_MAX_BATCH = 64
# On CPU an image costs the same or more in a bigger batch (benchmarks/README.md, the `batch-cost` table):
# batches only save per-call overhead, so they stop at 8 rows and wait for nobody.
DEFAULT_QUEUE_DELAY_US = 0
DEFAULT_PREFERRED_BATCH_SIZES = (8,)


@dataclasses.dataclass
class BuildResult:
    name: str
    status: str  # built | up to date | skipped | failed
    detail: str = ""


def recipe_hash(entry: dict) -> str:
    return hashlib.sha256((CONVERTER_VERSION + json.dumps(entry, sort_keys=True)).encode()).hexdigest()


def spec_for(entry: dict, input_shape: tuple[int, int, int], output_dims: list[tuple[int, ...]],
             source: str) -> ModelSpec:
    crop = entry.get("crop", {})
    height, width, channels = input_shape
    return ModelSpec(
        name=entry["name"], task=entry["task"], decoder=entry["decoder"], input_name="input",
        height=height, width=width, channels=channels,
        output_names=tuple(entry["outputs"]), output_dims=tuple(output_dims),
        max_batch_size=int(entry.get("max_batch_size", DEFAULT_MAX_BATCH)),
        colour=entry["colour"], scale=float(entry["scale"]), offset=float(entry["offset"]),
        crop=CropRecipe(margin=float(crop.get("margin", 0.0)),
                        pad_px=tuple(int(v) for v in crop.get("pad_px", (0, 0))),
                        stretch=bool(crop.get("stretch", False))),
        letterbox=bool(entry.get("letterbox", False)),
        labels=tuple(entry.get("labels", ())), units=entry.get("units", ""),
        source=source, sha256=entry.get("sha256", ""),
        version=entry.get("version", "1"),
        queue_delay_us=int(entry.get("queue_delay_us", DEFAULT_QUEUE_DELAY_US)),
        preferred_batch_sizes=tuple(int(n) for n in entry.get("preferred_batch_sizes",
                                                              DEFAULT_PREFERRED_BATCH_SIZES)),
        score_threshold=float(entry.get("score_threshold", 0.5)),
        nms_iou=float(entry.get("nms_iou", 0.3)),
    )


def is_up_to_date(model_dir: Path, digest: str) -> bool:
    record = model_dir / "1" / BUILD_RECORD
    if not (record.exists() and (model_dir / "1" / MODEL_FILE).exists()
            and (model_dir / CONFIG_FILE).exists()):
        return False
    return json.loads(record.read_text()).get("recipe") == digest


def write_model_folder(model_dir: Path, spec: ModelSpec, onnx_bytes: bytes, record: dict) -> None:
    write_config(spec.to_model_config(), model_dir / CONFIG_FILE)
    write_config(spec.to_model_config(gpu=True), model_dir / GPU_CONFIG_FILE)
    labels = model_dir / LABELS_FILE
    if spec.labels:
        labels.write_text("".join(f"{label}\n" for label in spec.labels))
    elif labels.exists():
        labels.unlink()
    version_dir = model_dir / "1"
    version_dir.mkdir(parents=True, exist_ok=True)
    partial = version_dir / (MODEL_FILE + ".partial")
    partial.write_bytes(onnx_bytes)
    partial.replace(version_dir / MODEL_FILE)
    (version_dir / BUILD_RECORD).write_text(json.dumps(record, indent=2) + "\n")


def build_one(entry: dict, repository: Path, tolerance: float, force: bool,
              raw_tolerance: float = DEFAULT_RAW_TOLERANCE) -> BuildResult:
    from convert import export  # TensorFlow is imported only when something is built

    name = entry["name"]
    model_dir = repository / name
    digest = recipe_hash(entry)
    if not force and is_up_to_date(model_dir, digest):
        return BuildResult(name, "up to date")
    try:
        path = artifacts.resolve(entry["source"], entry.get("sha256", ""))
    except artifacts.ArtifactUnavailable as exc:
        return BuildResult(name, "skipped", str(exc))
    source = export.load(entry.get("format") or export.guess_format(path), path, list(entry["outputs"]))
    return build_from_source(entry, source, model_dir, digest, tolerance=tolerance, raw_tolerance=raw_tolerance)


def build_from_source(entry: dict, source, model_dir: Path, digest: str, *, tolerance: float,
                      raw_tolerance: float) -> BuildResult:
    """Check a converted model (`export.SourceModel`) and write its folder, or refuse and write nothing."""
    from convert import parity

    name = entry["name"]
    output_dims = [
        tuple(int(d.dim_value) for d in o.type.tensor_type.shape.dim[1:])
        for o in source.onnx_model.graph.output
    ]
    spec = spec_for(entry, source.input_shape, output_dims, artifacts.describe(entry["source"]))
    try:
        spec.check_labels()
    except SpecError as exc:
        return BuildResult(name, "failed", f"refusing to write {name}: {exc}")
    onnx_bytes = source.onnx_model.SerializeToString()
    result = parity.check(spec, source.run, onnx_bytes)
    log.info("%s: %s", name, result.line())
    problems = result.problems(tolerance, raw_tolerance)
    if problems:
        return BuildResult(name, "failed", f"refusing to write {name}: {'; '.join(problems)} "
                                           f"({result.line()})")
    record = {"recipe": digest, "source": spec.source, "sha256": spec.sha256,
              "parity": dataclasses.asdict(result), "tolerance": tolerance, "raw_tolerance": raw_tolerance}
    write_model_folder(model_dir, spec, onnx_bytes, record)
    return BuildResult(name, "built", result.line())


def build_all(entries: list[dict], repository: Path, *, tolerance: float = DEFAULT_TOLERANCE,
              raw_tolerance: float = DEFAULT_RAW_TOLERANCE, force: bool = False) -> list[BuildResult]:
    results = []
    with tqdm(entries, desc="models", unit="model") as bar:
        for entry in bar:
            bar.set_postfix_str(entry["name"])
            try:
                result = build_one(entry, repository, tolerance, force, raw_tolerance)
            except artifacts.ChecksumMismatch as exc:
                result = BuildResult(entry["name"], "failed", str(exc))
            results.append(result)
    for r in results:
        log.log(logging.ERROR if r.status == "failed" else logging.INFO,
                "%-28s %-10s %s", r.name, r.status, r.detail)
    return results
