"""`python -m faceserve.dev.cluster`: nginx, several faceserve instances, their Triton and their PostgreSQL on
127.0.0.1, until Ctrl-C or SIGTERM."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from faceserve.dev.cluster import Cluster
from faceserve.settings import STORE_ENV, configured_store


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m faceserve.dev.cluster", description=__doc__)
    parser.add_argument("--instances", type=int, default=2, help="faceserve instances behind nginx (default 2)")
    parser.add_argument("--workers", type=int, default=1,
                        help="processes per instance (default 1: the instances are the replicas)")
    parser.add_argument("--embedded", action="store_true",
                        help="each instance runs its models in-process instead of on the one local Triton")
    parser.add_argument("--port", type=int, default=8080, help="nginx's port on 127.0.0.1 (default 8080)")
    parser.add_argument("--store", "--gallery", dest="store",
                        help=f"the shared store's URL, given to every instance as {STORE_ENV} (default: "
                             f"${STORE_ENV}, else a local PostgreSQL started with the cluster and removed with it)")
    parser.add_argument("--log-dir", type=Path, default=Path("/tmp/faceserve-cluster"),
                        help="nginx's and the instances' logs (default %(default)s)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per readiness poll otherwise

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):  # also when started in the background (SIGINT ignored)
        signal.signal(sig, lambda *_: stop.set())
    cluster = Cluster(args.instances, backend="embedded" if args.embedded else "triton", workers=args.workers,
                      port=args.port, store=args.store or configured_store(), log_dir=args.log_dir)
    with cluster:
        backend = f"Triton grpc://{cluster.triton.grpc_url}" if cluster.triton else "embedded onnxruntime"
        store = (f"local PostgreSQL {cluster.store_url}, log {cluster.postgres.log_path}" if cluster.postgres
                 else "store given by --store")  # its URL may hold a password: not printed
        print(f"faceserve cluster ready on {cluster.url} ({backend})\n  store: {store}\n"
              + "".join(f"  {i.name}: {i.url} (pid {i.server.pid}, log {i.log})\n" for i in cluster.instances)
              + f"  nginx access log {cluster.nginx.access_log}\n"
              + (f"  admin API key (every scope; docs/security.md): {cluster.log_dir / 'admin-key'}\n"
                 if cluster.api_key else "")
              + "Ctrl-C to stop.", flush=True)
        while not stop.wait(0.5):
            if not cluster.nginx.running:
                print(f"nginx exited unexpectedly\n{cluster.nginx.log_tail()}", file=sys.stderr)
                return 1
    print("cluster stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
