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
from faceserve.models.decoder import decoder_for
from faceserve.models import versions
from faceserve.models.repository import (CONFIG_FILE, INPUT_NAME, VERSION_DIR, make_spec, model_file,
                                         recipe_from_manifest, write_onnx_model_folder)
from faceserve.models.repository import versions as version_numbers
from faceserve.models.spec import ModelSpec, SpecError

log = logging.getLogger("convert")

# Bump when a change here changes what is written for the same manifest entry.
CONVERTER_VERSION = "4"
BUILD_RECORD = versions.BUILD_RECORD
# Manifest keys for batching; absent ones take ModelSpec's defaults.
BATCHING_KEYS = ("max_batch_size", "queue_delay_us", "preferred_batch_sizes")


@dataclasses.dataclass
class BuildResult:
    name: str
    status: str  # built | up to date | skipped | failed
    detail: str = ""


def recipe_hash(entry: dict) -> str:
    return hashlib.sha256((CONVERTER_VERSION + json.dumps(entry, sort_keys=True)).encode()).hexdigest()


def spec_for(entry: dict, input_shape: tuple[int, int, int], output_dims: list[tuple[int, ...]],
             source: str) -> ModelSpec:
    height, width, channels = input_shape
    batching = {key: entry[key] for key in BATCHING_KEYS if key in entry}
    if "preferred_batch_sizes" in batching:
        batching["preferred_batch_sizes"] = tuple(int(n) for n in batching["preferred_batch_sizes"])
    return make_spec(
        {**recipe_from_manifest(entry), "source": source},
        name=entry["name"], input_name=INPUT_NAME, height=height, width=width, channels=channels,
        output_names=tuple(entry["outputs"]), output_dims=tuple(output_dims),
        labels=tuple(entry.get("labels", ())), **batching)


def build_record(model_dir: Path) -> Path:
    """The build's record beside the model `convert build` writes: the recipe's digest and the parity measured."""
    return model_dir / VERSION_DIR / BUILD_RECORD


def is_up_to_date(model_dir: Path, digest: str) -> bool:
    record = build_record(model_dir)
    if not (record.exists() and model_file(model_dir, VERSION_DIR).exists() and (model_dir / CONFIG_FILE).exists()):
        return False
    return json.loads(record.read_text()).get("recipe") == digest


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
    options = {"graph_outputs": list(entry["graph_outputs"])} if "graph_outputs" in entry else {}
    source = export.load(entry.get("format") or export.guess_format(path), path, list(entry["outputs"]), **options)
    return build_from_source(entry, source, model_dir, digest, tolerance=tolerance, raw_tolerance=raw_tolerance)


def build_from_source(entry: dict, source, model_dir: Path, digest: str, *, tolerance: float,
                      raw_tolerance: float, new_version: bool = False) -> BuildResult:
    """Check a converted model (`export.SourceModel`) and write its folder (`new_version`: add it as a new version
    beside the model's others, `versions.add_version`), or refuse and write nothing."""
    from convert import parity

    name = entry["name"]
    output_dims = [
        tuple(int(d.dim_value) if d.HasField("dim_value") else -1 for d in o.type.tensor_type.shape.dim[1:])
        for o in source.onnx_model.graph.output
    ]
    spec = spec_for(entry, source.input_shape, output_dims, artifacts.describe(entry["source"]))
    try:
        spec.check_labels()
        decoder_for(spec)
    except SpecError as exc:
        return BuildResult(name, "failed", f"refusing to write {name}: {exc}")
    onnx_bytes = source.onnx_model.SerializeToString()
    result = parity.check(spec, source.run, onnx_bytes, sets=source.samples(spec) if source.samples else None)
    log.info("%s: %s", name, result.line())
    problems = result.problems(tolerance, raw_tolerance)
    if problems:
        return BuildResult(name, "failed", f"refusing to write {name}: {'; '.join(problems)} "
                                           f"({result.line()})")
    record = {"recipe": digest, "source": spec.source, "sha256": spec.sha256,
              "parity": dataclasses.asdict(result), "tolerance": tolerance, "raw_tolerance": raw_tolerance}
    if new_version:
        version = versions.add_version(model_dir, spec, onnx_bytes, record)
        return BuildResult(name, "built", f"version {version}: {result.line()}")
    built = version_numbers(model_dir)
    if len(built) > 1:
        return BuildResult(name, "failed", f"refusing to write {name}: it has versions {', '.join(map(str, built))} "
                                           f"from `convert model`; add another with `python -m convert model`, "
                                           f"or promote one")
    write_onnx_model_folder(model_dir, spec, onnx_bytes)
    build_record(model_dir).write_text(json.dumps(record, indent=2) + "\n")  # last: it marks the build complete
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
