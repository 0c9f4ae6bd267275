"""Build the Triton model repository from training artifacts; ship a model's new versions (docs/models.md).

    python -m convert build                      # every default model of convert/manifest.toml
    python -m convert build --only emotion_mini_xception_48 --repository /tmp/repo
    python -m convert model my_model.h5 --name my_emotion --task emotion --decoder softmax \\
        --labels angry,disgust,fear,happy,sad,surprise,neutral --colour gray --scale 0.00784 --offset -1
    python -m convert model model.onnx --name emotion --recipe emotion.toml --labels-file labels.txt
    python -m convert versions emotion; python -m convert promote emotion 2; python -m convert rollback emotion
    python -m convert promote emotion 2 --triton-url grpc://127.0.0.1:8001   # Triton loads it first (explicit mode)
    python -m convert quantize age                # an INT8 version of age's serving one, within its budget
    python -m convert shadow emotion 2; python -m convert canary emotion 2 --share 0.1  # --triton-url: loaded first
    python -m convert candidate-stop emotion      # a trial of a candidate version beside the serving one, or its end
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
import tomllib
from pathlib import Path

from convert import artifacts, build, export, quantize, recipe  # export imports TensorFlow only when it converts
from convert.parity import DEFAULT_RAW_TOLERANCE, DEFAULT_TOLERANCE
from faceserve.backends import triton_control
from faceserve.models import repository, rollout, tasks, versions
from faceserve.models.decoder import decoders

log = logging.getLogger("convert")
DEFAULT_MANIFEST = Path(__file__).with_name("manifest.toml")
DEFAULT_REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"


def _build(args: argparse.Namespace) -> int:
    manifest = tomllib.loads(args.manifest.read_text())
    entries = manifest["model"]
    if args.only:
        known = {e["name"] for e in entries}
        unknown = set(args.only) - known
        if unknown:
            log.error("not in %s: %s (known: %s)", args.manifest, ", ".join(sorted(unknown)), ", ".join(sorted(known)))
            return 2
        entries = [e for e in entries if e["name"] in args.only]
    else:
        entries = [e for e in entries if e.get("default")]
    results = build.build_all(entries, args.repository, tolerance=args.tolerance, raw_tolerance=args.raw_tolerance,
                              force=args.force)
    failed = [r for r in results if r.status == "failed"]
    return 1 if failed else 0


def _model(args: argparse.Namespace) -> int:
    try:
        entry = recipe.merge(recipe.from_file(args.recipe, args.name) if args.recipe else {}, _flags(args), args.name)
    except recipe.RecipeError as exc:
        log.error("refusing to convert %s: %s", args.name, exc)
        return 2
    if not args.source.exists():
        log.error("refusing to convert %s: %s does not exist; give the trained model (.h5/.keras file, SavedModel "
                  "folder, .tflite, TF.js model.json or .onnx)", args.name, args.source)
        return 2
    try:
        fmt = entry.get("format") or export.guess_format(args.source)
    except ValueError as exc:
        log.error("refusing to convert %s: %s", args.name, exc)
        return 2
    actual = artifacts.sha256_of(args.source)
    if entry.get("sha256") and entry["sha256"] != actual:
        log.error("refusing to convert %s: %s has sha256 %s, the recipe pins %s; give the file the recipe was "
                  "written for, or update its sha256", args.name, args.source, actual, entry["sha256"])
        return 2
    entry = {**{k: v for k, v in entry.items() if k != "default"}, "format": fmt,
             "source": {"path": str(args.source.resolve())}, "sha256": actual}
    options = {"graph_outputs": list(entry["graph_outputs"])} if "graph_outputs" in entry else {}
    try:
        source = export.load(fmt, args.source, list(entry["outputs"]), **options)
    except Exception as exc:  # whatever the framework says about a file it cannot read
        log.error("refusing to convert %s: %s could not be read as %s: %s: %s; check --format (%s)", args.name,
                  args.source, fmt, type(exc).__name__, exc, ", ".join(export.LOADERS))
        return 1
    result = build.build_from_source(entry, source, args.repository / args.name, build.recipe_hash(entry),
                                     tolerance=args.tolerance, raw_tolerance=args.raw_tolerance, new_version=True)
    log.log(logging.INFO if result.status == "built" else logging.ERROR, "%s %s: %s", args.name, result.status,
            result.detail)
    return 0 if result.status == "built" else 1


def _quantize(args: argparse.Namespace) -> int:
    model_dir = args.repository / args.model
    try:
        if not (model_dir / repository.CONFIG_FILE).is_file():
            raise versions.VersionError(f"{model_dir} is not a model folder of the repository")
        spec = repository.load_spec(model_dir)
        record = versions.build_record(model_dir, int(spec.version))
        if record.get("quantized"):
            raise quantize.QuantizeError(f"version {spec.version} is already {record['quantized']}; promote a float "
                                         f"version first")
        budget = quantize.Budget(**{field: getattr(args, field) for field in dataclasses.asdict(quantize.Budget())})
        float_onnx = repository.model_file(model_dir, spec.version).read_bytes()
        outcome = quantize.quantize(spec, float_onnx, budget)
    except (versions.VersionError, quantize.QuantizeError) as exc:
        log.error("refusing to quantize %s: %s", args.model, exc)
        return 2
    figures = json.dumps(outcome.figures)
    if outcome.problems:
        log.error("refusing to write an INT8 version of %s: %s (%s); nothing written", args.model,
                  "; ".join(outcome.problems), figures)
        return 1
    record = {"quantized": quantize.QUANTIZED, "from_version": int(spec.version), "source": record.get("source"),
              "sha256": record.get("sha256"), "quantization": {
                  "method": "onnxruntime.quantization.quantize_static", "format": quantize.QUANT_FORMAT,
                  "activations": "uint8", "weights": "int8 per channel", "calibration": "MinMax",
                  "calibration_inputs": outcome.calibration_inputs},
              "parity": outcome.figures, "budget": dataclasses.asdict(budget)}
    version = versions.add_version(model_dir, spec, outcome.onnx_bytes, record)
    log.info("%s: INT8 version %s written beside version %s (%s); serve it with `python -m convert promote %s %s`",
             args.model, version, spec.version, figures, args.model, version)
    return 0


def _promote(args: argparse.Namespace) -> int:
    return _switch(args, args.version, lambda model_dir: versions.promote(model_dir, args.version))


def _rollback(args: argparse.Namespace) -> int:
    return _switch(args, versions.previous_version(args.repository / args.model), versions.rollback)


def _switch(args: argparse.Namespace, target: int | None, switch) -> int:
    """With --triton-url, Triton holds `target` beside the serving version before the config names it (a refusal
    there writes nothing); then the config is rewritten, which every service follows."""
    model_dir = args.repository / args.model
    try:
        if args.triton_url and target is not None and target in repository.versions(model_dir) \
                and target != repository.serving_version(model_dir):
            _load_beside(args, model_dir, target)
        before, now = switch(model_dir)
    except (versions.VersionError, triton_control.TritonControlError) as exc:
        log.error("refusing: %s", exc)
        return 2
    log.info("%s: version %s serves (was %s); a service follows at its next reload (FACESERVE_MODELS_WATCH_S, or "
             "POST /models/reload)", args.model, now, before)
    return 0


def _load_beside(args: argparse.Namespace, model_dir: Path, version: int) -> None:
    began = time.perf_counter()
    held = triton_control.load_beside(args.triton_url, model_dir, version)
    log.info("%s: Triton at %s holds versions %s (%.2f s)", args.model, args.triton_url,
             ", ".join(map(str, held)), time.perf_counter() - began)


def _trial(args: argparse.Namespace) -> int:
    """With --triton-url, Triton holds the candidate beside the serving version before the config names the trial
    (a refusal there writes nothing)."""
    model_dir, share = args.repository / args.model, getattr(args, "share", None)
    try:
        rollout.checked_trial(model_dir, args.command, args.version, share)
        if args.triton_url:
            _load_beside(args, model_dir, args.version)
        trial = rollout.start_trial(model_dir, args.command, args.version, share)
    except (versions.VersionError, triton_control.TritonControlError) as exc:
        log.error("refusing: %s; nothing changed", exc)
        return 2
    log.info("%s: version %s runs as a %s candidate%s; a service follows at its next reload "
             "(POST /models/reload)", args.model, trial.version, trial.mode,
             f" answering {trial.share:g} of requests" if trial.mode == rollout.CANARY else "")
    return 0


def _stop_trial(args: argparse.Namespace) -> int:
    try:
        trial = rollout.stop_trial(args.repository / args.model)
    except versions.VersionError as exc:
        log.error("refusing: %s; nothing changed", exc)
        return 2
    log.info("%s: the %s of version %s stopped", args.model, trial.mode, trial.version)
    return 0


def _versions(args: argparse.Namespace) -> int:
    """Each version of a model, one JSON object a line: whether it serves, its source and its parity."""
    records = versions.version_records(args.repository / args.model)
    if not records:
        log.error("%s has no built version in %s", args.model, args.repository)
        return 2
    for record in records:
        print(json.dumps(record))
    return 0


def _flags(args: argparse.Namespace) -> dict:
    """The recipe keys given on the command line (None: not given)."""
    flags = {"task": args.task, "decoder": args.decoder, "format": args.format,
             "outputs": args.outputs.split(",") if args.outputs else None,
             "labels": args.labels.split(",") if args.labels else None, "labels_file": args.labels_file,
             "units": args.units, "colour": args.colour, "scale": args.scale, "offset": args.offset,
             "letterbox": args.letterbox or None}
    crop = {"margin": args.crop_margin, "stretch": args.crop_stretch or None, "square": args.crop_square or None,
            "pad_px": [int(v) for v in args.crop_pad_px.split(",")] if args.crop_pad_px else None}
    return {**flags, "crop": {key: value for key, value in crop.items() if value is not None}}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    common = argparse.ArgumentParser(add_help=False, parents=[where])
    common.add_argument("--tolerance", type=float, default=DEFAULT_TOLERANCE,
                        help="largest max-abs difference between source and ONNX outputs, as the pipeline "
                             "consumes them, accepted (default %(default)g)")
    common.add_argument("--raw-tolerance", type=float, default=DEFAULT_RAW_TOLERANCE,
                        help="the same on the raw output tensors; looser because BlazeFace's raw logits and "
                             "pixel regressors are large numbers (default %(default)g; measured 5.95e-04)")

    b = sub.add_parser("build", parents=[common], help="build models listed in a manifest")
    b.add_argument("--manifest", type=Path, default=DEFAULT_MANIFEST)
    b.add_argument("--only", nargs="+", metavar="NAME", help="build these entries (default: the default ones)")
    b.add_argument("--force", action="store_true", help="rebuild even when up to date")
    b.set_defaults(func=_build)

    m = sub.add_parser("model", parents=[common], help="convert one trained model, its recipe from a TOML file "
                                                      "and/or flags")
    m.add_argument("source", type=Path, help=".h5/.hdf5/.keras file, SavedModel folder, .tflite file, TF.js "
                                             "model.json (graph or layers model) or .onnx file")
    m.add_argument("--name", required=True, help="the repository folder (the model's name in answers)")
    m.add_argument("--recipe", metavar="FILE[#ENTRY]",
                   help="a TOML file with the keys of a convert/manifest.toml entry (a manifest's entry by its name: "
                        "convert/manifest.toml#emotion_big_xception); the flags below win over it")
    m.add_argument("--task", help=f"{', '.join(tasks.ROLE_TASKS)}, or the per-face field a head answers "
                                  f"(emotion, age, or a new one such as emotion_fer48)")
    m.add_argument("--decoder", choices=list(decoders()))
    m.add_argument("--format", choices=list(export.LOADERS), help="default: from the file's name")
    m.add_argument("--outputs", help="comma-separated output tensor names (default: probabilities)")
    m.add_argument("--labels", help="comma-separated labels, in output order")
    m.add_argument("--labels-file", help="a file of labels, one a line, in output order")
    m.add_argument("--units")
    m.add_argument("--colour", help="gray, rgb or bgr: what the model was trained on (default rgb)")
    m.add_argument("--scale", type=float, help="pixel values are multiplied by it (default 1/255)")
    m.add_argument("--offset", type=float, help="then added to (default 0)")
    m.add_argument("--letterbox", action="store_true")
    m.add_argument("--crop-margin", type=float)
    m.add_argument("--crop-pad-px", help="x,y pixels added on each side of a face box")
    m.add_argument("--crop-stretch", action="store_true")
    m.add_argument("--crop-square", action="store_true")
    m.set_defaults(func=_model)

    q = sub.add_parser("quantize", parents=[where], help="write an INT8 version of a model's serving version "
                                                         "(static quantization calibrated on real faces), refused "
                                                         "over its parity budget")
    q.add_argument("model")
    for field, default in dataclasses.asdict(quantize.Budget()).items():
        q.add_argument(f"--{field.replace('_', '-')}", dest=field, type=float, default=default,
                       help=f"{quantize.BUDGET_HELP[field]} (default %(default)g)")
    q.set_defaults(func=_quantize)

    p = sub.add_parser("promote", parents=[where], help="serve version N of a model (rewrites its config.pbtxt)")
    p.add_argument("model")
    p.add_argument("version", type=int)
    p.set_defaults(func=_promote)
    v = sub.add_parser("versions", parents=[where], help="list a model's versions: which serves, source, parity")
    v.add_argument("model")
    v.set_defaults(func=_versions)
    r = sub.add_parser("rollback", parents=[where], help="serve again the version served before the last promotion")
    r.add_argument("model")
    r.set_defaults(func=_rollback)
    s = sub.add_parser("shadow", parents=[where], help="run version N beside the serving one on the same faces, "
                                                       "the serving one answering; compared per request")
    c = sub.add_parser("canary", parents=[where], help="answer a share of requests (drawn by request id) with "
                                                       "version N; compared per request")
    for trial in (s, c):
        trial.add_argument("model")
        trial.add_argument("version", type=int)
        trial.set_defaults(func=_trial)
    c.add_argument("--share", type=float, required=True, help="the fraction of requests version N answers (0 to 1)")
    for switching in (p, r, s, c):
        switching.add_argument("--triton-url", help="a Triton server serving this repository under explicit model "
                                                    "control (grpc://host:8001 or http://host:8000): it loads the "
                                                    "version beside the serving one first")
    t = sub.add_parser("candidate-stop", parents=[where], help="end a model's shadow or canary")
    t.add_argument("model")
    t.set_defaults(func=_stop_trial)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
