"""`convert model`'s recipe: a manifest entry made from a TOML file, flags over it, checked before any conversion.

A recipe file holds the keys of one `convert/manifest.toml` entry (without `source`), either as a plain table or
as a manifest with `[[model]]` entries (the one named `FILE#ENTRY`, else the one named `--name`, or the only one).
A flag given on the command line wins over the file; what neither gives takes the defaults below.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from convert.export import LOADERS
from faceserve.models import crops, tasks
from faceserve.models.decoder import decoders
from faceserve.models.repository import read_labels

# What `convert model` assumes when neither the file nor a flag says (a float RGB model on 0..1 pixels).
DEFAULTS = {"outputs": ["probabilities"], "colour": "rgb", "scale": 1 / 255, "offset": 0.0}
COLOURS = ("gray", "rgb", "bgr")
CROP_KEYS = ("margin", "pad_px", "stretch", "square", "align", "template")
KEYS = ("name", "task", "decoder", "format", "outputs", "labels", "labels_file", "units", "colour", "scale",
        "offset", "letterbox", "crop", "score_threshold", "nms_iou", "graph_outputs", "max_batch_size",
        "queue_delay_us", "preferred_batch_sizes", "sha256", "default", "source")
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


class RecipeError(ValueError):
    """What is wrong with a recipe, and how to put it right."""


def from_file(where: str, name: str | None) -> dict:
    """One recipe table of a TOML file, `FILE` or `FILE#ENTRY` (see the module's docstring)."""
    file, _, entry_name = where.partition("#")
    path, name = Path(file), entry_name or name
    if not path.is_file():
        raise RecipeError(f"recipe {path} does not exist; give --recipe the path of a TOML file")
    try:
        document = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"recipe {path} is not valid TOML ({exc}); fix the file") from None
    if "model" not in document:
        return document
    entries = document["model"]
    chosen = [e for e in entries if e.get("name") == name] if len(entries) > 1 else entries
    if len(chosen) != 1:
        known = ", ".join(str(e.get("name")) for e in entries)
        raise RecipeError(f"recipe {path} has {len(entries)} [[model]] entries ({known}) and none is named "
                          f"{name!r}; name one: --recipe {path}#ENTRY")
    return chosen[0]


def merge(recipe: dict, flags: dict, name: str) -> dict:
    """The manifest entry `build` takes: the file's recipe, flags (not None) over it, defaults under both."""
    unknown = sorted(set(recipe) - set(KEYS))
    if unknown:
        raise RecipeError(f"unknown recipe keys: {', '.join(unknown)}; a recipe holds manifest keys "
                          f"({', '.join(KEYS)})")
    given = {key: value for key, value in flags.items() if value is not None}
    if "labels" in given or "labels_file" in given:  # labels given on the command line replace the file's
        recipe = {key: value for key, value in recipe.items() if key not in ("labels", "labels_file")}
    entry = {**DEFAULTS, **recipe, **given}
    entry["name"] = name
    crop = {**recipe.get("crop", {}), **flags.get("crop", {})}
    if crop:
        entry["crop"] = crop
    return check(entry)


def check(entry: dict) -> dict:
    """Refuse, before TensorFlow is loaded, a recipe that cannot make a model; fill labels from labels_file."""
    name = entry["name"]
    if not MODEL_NAME.fullmatch(name):
        raise RecipeError(f"model name {name!r} cannot be a repository folder; use letters, digits, '_', '.' "
                          f"and '-'")
    if not entry.get("task"):
        raise RecipeError(f"no task: give --task (or `task` in the recipe): {', '.join(tasks.ROLE_TASKS)}, or the "
                          f"response field a face head answers (emotion, age, or a new one)")
    try:
        tasks.check_name(entry["task"])
    except ValueError as exc:
        raise RecipeError(f"{exc}; give --task a field name such as emotion_fer48") from None
    known = decoders()
    if entry.get("decoder") not in known:
        given = f"decoder {entry['decoder']!r} is unknown" if entry.get("decoder") else "no decoder"
        raise RecipeError(f"{given}: give --decoder (or `decoder` in the recipe), one of {', '.join(known)}")
    if entry.get("format") and entry["format"] not in LOADERS:
        raise RecipeError(f"format {entry['format']!r} is unknown; give --format one of {', '.join(LOADERS)}")
    if entry["colour"] not in COLOURS:
        raise RecipeError(f"colour {entry['colour']!r} is not one of {', '.join(COLOURS)}; give --colour")
    unknown_crop = sorted(set(entry.get("crop", {})) - set(CROP_KEYS))
    if unknown_crop:
        raise RecipeError(f"unknown crop keys: {', '.join(unknown_crop)}; crop takes {', '.join(CROP_KEYS)}")
    template = entry.get("crop", {}).get("template", "arcface")
    if template not in crops.TEMPLATES:
        raise RecipeError(f"crop template {template!r} is unknown; give crop.template one of "
                          f"{', '.join(crops.TEMPLATES)}")
    if entry.get("labels_file"):
        if entry.get("labels"):
            raise RecipeError("both labels and a labels file are given; keep one")
        path = Path(entry.pop("labels_file"))
        if not path.is_file():
            raise RecipeError(f"labels file {path} does not exist; give --labels-file a file of one label a line, "
                              f"in output order")
        entry["labels"] = list(read_labels(path))
    entry.pop("labels_file", None)
    entry.setdefault("labels", [])
    return entry
