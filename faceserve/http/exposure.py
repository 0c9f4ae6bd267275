"""No keyless service listening beyond loopback (docs/security.md).

Without keys, admin routes answer loopback clients only. Behind a proxy (nginx, a Kubernetes Service, a
container's port mapping) every client can look local, so a keyless service bound beyond loopback could open its
admin routes to anyone who reaches the proxy: it refuses to start unless FACESERVE_PRIVATE_DEPLOYMENT=1 says that
nothing untrusted reaches it.

BentoML gives the worker processes no setting that names the bind address; `bound_host` reads it where each of
`bentoml serve`'s processes has it: the `--host` option (or BENTOML_HOST) of the serving command, else the
service's own `http.host`; in a worker, the listening socket it was handed (`--fd`).
"""

from __future__ import annotations

import ipaddress
import os
import socket

PRIVATE_DEPLOYMENT_ENV = "FACESERVE_PRIVATE_DEPLOYMENT"


class ExposedWithoutKeys(SystemExit):
    """Raised at import of service.py: `bentoml serve` stops with this message and a non-zero status."""


def bound_host(service_host: str) -> str | None:
    """The address this `bentoml serve` listens on; None outside one (tests, `bentoml build`)."""
    import click

    context = click.get_current_context(silent=True)
    if context is None:
        return None
    fd = context.params.get("fd")
    if isinstance(fd, int):  # a worker: the socket the arbiter opened
        with socket.socket(fileno=os.dup(fd)) as listening:
            return str(listening.getsockname()[0])
    if "host" in context.params:  # the serving command itself
        return context.params["host"] or service_host
    return None


def beyond_loopback(host: str) -> bool:
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host.lower() != "localhost"


def refuse_keyless_exposure(host: str | None, has_keys: bool, private_deployment: bool) -> None:
    if host is None or has_keys or private_deployment or not beyond_loopback(host):
        return
    raise ExposedWithoutKeys(
        f"faceserve: refusing to listen on {host} without API keys: behind a proxy or a port mapping every client "
        "can look local, and admin routes answer local clients. Configure keys (FACESERVE_API_KEYS_FILE; `python -m "
        f"faceserve keys new` makes one), listen on 127.0.0.1, or set {PRIVATE_DEPLOYMENT_ENV}=1 if nothing "
        "untrusted can reach this address (docs/security.md).")
