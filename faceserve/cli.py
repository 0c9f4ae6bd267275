"""`faceserve analyze IMAGE [--annotate OUT]`: the `analyze` endpoint's JSON, without a server."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from pathlib import Path

from faceserve.errors import FaceserveError
from faceserve.models.detectors import DEFAULT_DETECTOR, REGISTRY
from faceserve.pipeline import imaging
from faceserve.pipeline.annotate import annotate
from faceserve.runtime import Runtime
from faceserve.settings import Settings


async def _analyze(args: argparse.Namespace) -> int:
    settings = Settings.from_env()
    if args.repository:
        settings = dataclasses.replace(settings, repository=args.repository)
    if args.backend:
        settings = dataclasses.replace(settings, backend=args.backend)
    runtime = Runtime(settings)
    try:
        pixels = await runtime.image(upload=args.image)
        analysis = await runtime.analyze_image(pixels, args.detector)
    except FaceserveError as error:
        print(json.dumps(error.body()), file=sys.stderr)
        return 2
    finally:
        await runtime.close()
    print(analysis.model_dump_json(indent=2))
    if args.annotate:
        drawn = annotate(pixels, analysis)
        fmt = "jpeg" if args.annotate.suffix.lower() in (".jpg", ".jpeg") else "png"
        args.annotate.write_bytes(imaging.encode(drawn, fmt))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="faceserve")
    sub = parser.add_subparsers(dest="command", required=True)
    a = sub.add_parser("analyze", help="detect faces and print emotion, gender and age as JSON")
    a.add_argument("image", type=Path)
    a.add_argument("--detector", choices=[d.name for d in REGISTRY],
                   help=f"default: {DEFAULT_DETECTOR} when its model is built")
    a.add_argument("--annotate", type=Path, metavar="OUT", help="also write the annotated image (.png or .jpg)")
    a.add_argument("--repository", type=Path, help="model repository (default: FACESERVE_MODEL_REPOSITORY)")
    a.add_argument("--backend", help="onnxruntime (default) or a Triton URL such as grpc://127.0.0.1:8001")
    args = parser.parse_args(argv)
    return asyncio.run(_analyze(args))


if __name__ == "__main__":
    sys.exit(main())
