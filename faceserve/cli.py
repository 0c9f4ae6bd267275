"""`faceserve analyze IMAGE [--annotate OUT]`: the `analyze` endpoint's JSON, without a server, or from the
pipeline model of a Triton server (`--server grpc://HOST:8001`)."""

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
from faceserve.pipeline.schemas import Analysis
from faceserve.runtime import Runtime
from faceserve.settings import Settings


def _analyze_on_server(args: argparse.Namespace) -> int:
    """The photo's bytes, as they are, to the server's pipeline model; its errors read `<code>: <message>`."""
    from tritonclient.utils import InferenceServerException

    from faceserve.triton_models.client import PipelineClient
    client = PipelineClient(args.server)
    try:
        answer = client.analyze(args.image.read_bytes(), args.detector)
    except InferenceServerException as error:
        code, _, message = error.message().partition(": ")
        print(json.dumps({"error": code, "message": message} if message else {"error": "triton", "message": code}),
              file=sys.stderr)
        return 2
    finally:
        client.close()
    analysis = Analysis.model_validate(answer.analysis)
    return _report(analysis, lambda: imaging.decode(args.image.read_bytes()), args)


async def _analyze(args: argparse.Namespace) -> int:
    if args.server:
        return _analyze_on_server(args)
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
    return _report(analysis, lambda: pixels, args)


def _report(analysis: Analysis, pixels, args: argparse.Namespace) -> int:
    """Print the JSON; with --annotate, draw it on the photo's `pixels()`."""
    print(analysis.model_dump_json(indent=2))
    if args.annotate:
        drawn = annotate(pixels(), analysis)
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
    a.add_argument("--server", metavar="URL",
                   help="analyse on a Triton server's pipeline model instead: grpc://HOST:8001 or http://HOST:8000")
    args = parser.parse_args(argv)
    return asyncio.run(_analyze(args))


if __name__ == "__main__":
    sys.exit(main())
