"""Build the Triton model repository from training artifacts.

    python -m convert build                      # every default model of convert/manifest.toml
    python -m convert build --only emotion_mini_xception_48 --repository /tmp/repo
    python -m convert model my_model.h5 --name my_emotion --task emotion --decoder softmax \\
        --labels angry,disgust,fear,happy,sad,surprise,neutral --colour gray --scale 0.00784 --offset -1
"""

from __future__ import annotations

import argparse
import logging
import sys
import tomllib
from pathlib import Path

from convert import build
from convert.parity import DEFAULT_RAW_TOLERANCE, DEFAULT_TOLERANCE
from faceserve.models import tasks
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
    entry = {
        "name": args.name, "task": args.task, "decoder": args.decoder,
        "format": args.format or "", "source": {"path": str(args.source)}, "sha256": "",
        "outputs": args.outputs.split(","), "labels": args.labels.split(",") if args.labels else [],
        "units": args.units, "colour": args.colour, "scale": args.scale, "offset": args.offset,
        "letterbox": args.letterbox,
        "crop": {"margin": args.crop_margin, "pad_px": [int(v) for v in args.crop_pad_px.split(",")],
                 "stretch": args.crop_stretch},
    }
    results = build.build_all([entry], args.repository, tolerance=args.tolerance, raw_tolerance=args.raw_tolerance,
                              force=True)
    return 0 if results[0].status == "built" else 1


def _task(text: str) -> str:
    try:
        return tasks.check_name(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="python -m convert", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
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

    m = sub.add_parser("model", parents=[common], help="convert one artifact given its recipe on the command line")
    m.add_argument("source", type=Path, help=".h5/.hdf5/.keras file, SavedModel folder or .tflite file")
    m.add_argument("--name", required=True)
    m.add_argument("--task", required=True, type=_task,
                   help=f"{', '.join(tasks.ROLE_TASKS)}, or the per-face field a head answers (emotion, age, ...)")
    m.add_argument("--decoder", required=True, choices=list(decoders()))
    m.add_argument("--format", choices=["keras", "savedmodel", "tflite"])
    m.add_argument("--outputs", default="probabilities", help="comma-separated output tensor names")
    m.add_argument("--labels", default="", help="comma-separated labels, in output order")
    m.add_argument("--units", default="")
    m.add_argument("--colour", default="rgb", choices=["gray", "rgb", "bgr"])
    m.add_argument("--scale", type=float, default=1 / 255)
    m.add_argument("--offset", type=float, default=0.0)
    m.add_argument("--letterbox", action="store_true")
    m.add_argument("--crop-margin", type=float, default=0.0)
    m.add_argument("--crop-pad-px", default="0,0")
    m.add_argument("--crop-stretch", action="store_true")
    m.set_defaults(func=_model)

    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
