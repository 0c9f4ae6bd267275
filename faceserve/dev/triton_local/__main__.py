"""`python -m faceserve.dev.triton_local serve|build`: the local Triton server from the command line."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from faceserve.dev.triton_local import LocalTriton, build_cpu_repository, ensure_env
from faceserve.dev.triton_local.server import DEFAULT_PORTS
from faceserve.settings import PROJECT_ROOT


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faceserve.dev.triton_local", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="run tritonserver on 127.0.0.1 in the foreground until Ctrl-C")
    build = commands.add_parser("build", help="only write the generated CPU repository (to inspect it)")
    for sub in (serve, build):
        sub.add_argument("--repository", type=Path, default=PROJECT_ROOT / "model_repository",
                         help="the canonical model repository (default: %(default)s)")
        sub.add_argument("--no-dynamic-batching", action="store_true",
                         help="same models and configs, without dynamic_batching")
        sub.add_argument("--models", nargs="+", help="only these models (default: every built one)")
        sub.add_argument("--no-pipeline", action="store_true",
                         help="without faceserve's pipeline and rotate models (faceserve.triton_models)")
    for kind, port in DEFAULT_PORTS.items():
        serve.add_argument(f"--{kind}-port", type=int, default=port)
    build.add_argument("--out", type=Path, default=PROJECT_ROOT / "build" / "triton-cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    if args.command == "build":
        ensure_env()
        names = build_cpu_repository(args.repository, args.out, dynamic_batching=not args.no_dynamic_batching,
                                     models=args.models, python_models=not args.no_pipeline)
        print(f"wrote {', '.join(names)} to {args.out}")
        return 0

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # also when started in the background (SIGINT ignored)
        signal.signal(sig, lambda *_: stop.set())
    server = LocalTriton(args.repository, http_port=args.http_port, grpc_port=args.grpc_port,
                         metrics_port=args.metrics_port, dynamic_batching=not args.no_dynamic_batching,
                         models=args.models, python_models=not args.no_pipeline)
    with server:
        print(f"tritonserver ready (pid {server.pid}): models {', '.join(server.models)}\n"
              f"  grpc://{server.grpc_url}  http://{server.http_url}  metrics http://{server.metrics_url}/metrics\n"
              f"  log {server.log_path}\nCtrl-C to stop.", flush=True)
        try:
            while not stop.wait(0.5):
                if not server.running:
                    print(f"tritonserver exited unexpectedly\n{server.log_tail()}", file=sys.stderr)
                    return 1
        except KeyboardInterrupt:
            pass
    print("tritonserver stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
