"""`faceserve analyze IMAGE [--annotate OUT]`: the `analyze` endpoint's JSON, without a server, or from the
pipeline model of a Triton server (`--server grpc://HOST:8001`).

`faceserve jobs submit DIR --server URL`: every photo of DIR as one asynchronous job of a running service; prints
the job's id, then follows it with a progress bar. `faceserve jobs results ID --server URL > out.jsonl`: its
results, one JSON line per photo.

`faceserve models compare emotion [--repository DIR]`: the comparison report of a model's trials of a candidate
version (as `/models/compare` answers it), read from the store of FACESERVE_STORE / FACESERVE_DATA_DIR.

`faceserve gallery reembed [--store URL] [--dry-run]`: every face of the gallery stored under another embedding model
than the serving one, embedded again by it from its thumbnail (docs/identity.md); a JSON report on stdout. Exit 0
when every face that could be re-embedded was, 1 when some could not (the report names them), 2 when the command
could not run.

`faceserve gallery index [--store URL] [--wait-s N] [--force]`: the gallery's saved search index built at the store's
current change, in the folder the workers read (FACESERVE_INDEX_DIR, else beside the store), before they start, so
that they start warm and none holds the whole gallery while building (docs/identity.md); one JSON line on stdout.
Exit 0 when it was built, one at that change was kept, or the gallery is searched exactly (below EXACT_BELOW faces,
nothing built unless --force); 2 when the command could not run (no such store, store unreachable, build failed);
3 when another process still built after --wait-s.

`faceserve keys new --id ID --scopes analyze,enrol`: a new API key, printed once, and its line for the key file
(FACESERVE_API_KEYS_FILE, docs/security.md), which holds only the key's digest."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

from faceserve.errors import FaceserveError
from faceserve.gallery.index import CURRENT, BuildBusy
from faceserve.models.detectors import DEFAULT_DETECTOR, REGISTRY
from faceserve.models.versions import model_ref
from faceserve.pipeline import imaging
from faceserve.pipeline.annotate import annotate
from faceserve.pipeline.schemas import Analysis
from faceserve.services import Services
from faceserve.settings import Settings
from faceserve.store import SQLITE_PREFIX


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


def _settings(args: argparse.Namespace) -> Settings:
    """The environment's settings, with what the command line gave instead (--repository, --backend, --store)."""
    given = {field: getattr(args, field, None) for field in ("repository", "backend", "store")}
    return dataclasses.replace(Settings.from_env(), **{field: value for field, value in given.items() if value})


async def _analyze(args: argparse.Namespace) -> int:
    if args.server:
        return _analyze_on_server(args)
    services = Services.build(_settings(args))
    try:
        pixels = await services.images.image(upload=args.image)
        analysis = await services.analysis.analysis(pixels, args.detector)
    except FaceserveError as error:
        print(json.dumps(error.body()), file=sys.stderr)
        return 2
    finally:
        await services.close()
    return _report(analysis, lambda: pixels, args)


def _report(analysis: Analysis, pixels, args: argparse.Namespace) -> int:
    """Print the JSON; with --annotate, draw it on the photo's `pixels()`."""
    print(analysis.model_dump_json(indent=2))
    if args.annotate:
        drawn = annotate(pixels(), analysis)
        fmt = "jpeg" if args.annotate.suffix.lower() in (".jpg", ".jpeg") else "png"
        args.annotate.write_bytes(imaging.encode(drawn, fmt))
    return 0


def _jobs(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from faceserve.jobs.client import JobsClient, JobsError, photos_in

    with JobsClient(args.server, args.api_key) as client:
        try:
            if args.jobs_command == "results":
                for chunk in client.results(args.job_id):
                    sys.stdout.buffer.write(chunk)
                sys.stdout.flush()
                return 0
            photos = photos_in(args.folder)
            if not photos:
                print(json.dumps({"error": "no_images", "message": f"no image files in {args.folder}"}),
                      file=sys.stderr)
                return 2
            job = client.submit(photos, args.detector, args.identify)
            print(job["id"], flush=True)
            if args.no_wait:
                return 0
            with tqdm(total=job["total"], unit="image", file=sys.stderr) as bar:
                def progress(status: dict) -> None:
                    bar.update(status["done"] + status["failed"] + status["cancelled"] - bar.n)
                    bar.set_postfix(failed=status["failed"])

                status = client.wait(job["id"], progress)
            print(json.dumps(status), file=sys.stderr)
            return 0 if status["state"] == "done" else 1
        except JobsError as error:
            print(json.dumps(error.body), file=sys.stderr)
            return 2


async def _compare(args: argparse.Namespace) -> int:
    services = Services.build(_settings(args))
    try:
        print((await services.models.compare(args.model)).model_dump_json(indent=2))
    except FaceserveError as error:
        print(json.dumps(error.body()), file=sys.stderr)
        return 2
    finally:
        await services.close()
    return 0


async def _reembed(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from faceserve.services.reembed import reembed

    services = Services.build(_settings(args))
    try:
        stage = await services.resources.identity()
        with tqdm(unit="face", file=sys.stderr, disable=None) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            report = await reembed(stage, dry_run=args.dry_run, progress=progress)
    except FaceserveError as error:
        print(json.dumps(error.body()), file=sys.stderr)
        return 2
    finally:
        await services.close()
    print(json.dumps(report.as_json(), indent=2))
    print(report.summary(), file=sys.stderr)
    return 0 if report.complete else 1


async def _index(args: argparse.Namespace) -> int:
    settings = _settings(args)
    if settings.store.startswith(SQLITE_PREFIX) and not Path(settings.store[len(SQLITE_PREFIX):]).is_file():
        # opening it would make an empty store, where the workers' own might be meant (a mistyped path)
        return _failed("store_not_found", f"no store at {settings.store}: give --store or FACESERVE_STORE (or "
                                          "FACESERVE_DATA_DIR) of the gallery to index")
    services = Services.build(settings)
    lines = []
    try:
        stage = await services.resources.identity()  # the galleries the workers open: the serving model's first
        for gallery in [stage.gallery, *(earlier.gallery for earlier in stage.earlier)]:
            index, started = gallery.index, time.monotonic()
            result = await asyncio.to_thread(index.build_now, force=args.force, wait_s=args.wait_s)
            model = index.model
            lines.append({"model": model_ref(model.name, model.version), "dimension": model.dimension,
                          "outcome": result.outcome, "kept": result.outcome == CURRENT, "change": result.version,
                          "faces": result.faces, "identities": result.identities, "exact_below": index.exact_below,
                          "seconds": round(time.monotonic() - started, 3),
                          "folder": str(result.folder or index.folder)})
    except FaceserveError as error:
        print(json.dumps(error.body()), file=sys.stderr)
        return 2
    except BuildBusy as error:
        return _failed("index_busy", f"{error}; run again later, or with a longer --wait-s", 3)
    except OSError as error:
        return _failed("index_not_saved", f"the index could not be saved: {error} (set FACESERVE_INDEX_DIR to a "
                                          "writable folder)")
    except RuntimeError as error:  # ann.build: what it saved does not open
        return _failed("index_build_failed", str(error))
    finally:
        await services.close()
    for line in lines:  # one per embedding model: the serving one, then each earlier one
        print(json.dumps(line))
    return 0


def _failed(code: str, message: str, exit_code: int = 2) -> int:
    print(json.dumps({"error": code, "message": message}), file=sys.stderr)
    return exit_code


def _new_key(args: argparse.Namespace) -> int:
    from faceserve.http.keys import new_key, parse_scopes

    try:
        key, entry = new_key(args.id, parse_scopes(args.scopes))
    except ValueError as error:
        print(json.dumps({"error": "invalid_key", "message": str(error)}), file=sys.stderr)
        return 2
    print(f"API key (shown this once; give it to the caller, it is not stored):\n{key}\n"
          f"Line for FACESERVE_API_KEYS_FILE:\n{entry.line}")
    if args.append:
        with args.append.open("a") as keys_file:
            keys_file.write(entry.line + "\n")
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
    jobs = sub.add_parser("jobs", help="asynchronous jobs on a running service").add_subparsers(
        dest="jobs_command", required=True)
    submit = jobs.add_parser("submit", help="submit every photo of a folder as one job and follow it")
    submit.add_argument("folder", type=Path)
    submit.add_argument("--detector", choices=[d.name for d in REGISTRY])
    submit.add_argument("--identify", action="store_true", help="match each face against the gallery")
    submit.add_argument("--no-wait", action="store_true", help="print the job's id and return")
    results = jobs.add_parser("results", help="a job's results as JSON Lines, on stdout")
    results.add_argument("job_id")
    for command in (submit, results):
        command.add_argument("--server", required=True, metavar="URL", help="the service, e.g. http://127.0.0.1:3000")
        command.add_argument("--api-key", default=os.environ.get("FACESERVE_API_KEY"),
                             help="default: FACESERVE_API_KEY")
    models = sub.add_parser("models", help="model versions (docs/models.md)").add_subparsers(
        dest="models_command", required=True)
    compare = models.add_parser("compare", help="a model's trials of a candidate version: agreement, confusion, "
                                                "latency, feedback (JSON)")
    compare.add_argument("model")
    compare.add_argument("--repository", type=Path, help="model repository (default: FACESERVE_MODEL_REPOSITORY)")
    gallery = sub.add_parser("gallery", help="the gallery (docs/identity.md)").add_subparsers(
        dest="gallery_command", required=True)
    re_embed = gallery.add_parser("reembed", help="embed the faces stored under other embedding models again with "
                                                  "the serving one, from their thumbnails; report what could not be")
    re_embed.add_argument("--store", metavar="URL", help="sqlite:///path or postgresql://... "
                                                         "(default: FACESERVE_STORE, else FACESERVE_DATA_DIR's)")
    re_embed.add_argument("--repository", type=Path, help="model repository (default: FACESERVE_MODEL_REPOSITORY)")
    re_embed.add_argument("--dry-run", action="store_true",
                          help="embed and count as a real run would, write nothing")
    index = gallery.add_parser("index", help="build the gallery's saved search index at the store's current change, "
                                              "before the workers start (one JSON line)")
    index.add_argument("--store", metavar="URL", help="sqlite:///path or postgresql://... "
                                                      "(default: FACESERVE_STORE, else FACESERVE_DATA_DIR's)")
    index.add_argument("--repository", type=Path, help="model repository (default: FACESERVE_MODEL_REPOSITORY)")
    index.add_argument("--wait-s", type=float, metavar="N",
                       help="wait at most N seconds for another process's build (default: until it ends)")
    index.add_argument("--force", action="store_true",
                       help="build even below the size where the workers search exactly (EXACT_BELOW faces)")
    keys = sub.add_parser("keys", help="API keys (docs/security.md)").add_subparsers(dest="keys_command",
                                                                                     required=True)
    new = keys.add_parser("new", help="make a key: print it once, and its line for FACESERVE_API_KEYS_FILE")
    new.add_argument("--id", required=True, help="the key's name in logs, job owners and the audit trail")
    new.add_argument("--scopes", required=True, help="comma-separated: analyze, enrol, admin")
    new.add_argument("--append", type=Path, metavar="FILE", help="also append the line to this key file")
    args = parser.parse_args(argv)
    if args.command == "keys":
        return _new_key(args)
    if args.command == "jobs":
        return _jobs(args)
    if args.command == "gallery":
        return asyncio.run(_index(args) if args.gallery_command == "index" else _reembed(args))
    if args.command == "models":
        return asyncio.run(_compare(args))
    return asyncio.run(_analyze(args))


if __name__ == "__main__":
    sys.exit(main())
