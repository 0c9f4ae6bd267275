"""Who is calling: the principal a request acts as, for ownership (jobs, remembered answers), quotas and the
gallery's audit trail.

The access middleware (faceserve/http/auth.py) puts a `Caller` in the ASGI scope under `CALLER`; endpoints
read it with `caller_of`. Without API keys every client is told apart by its address, so that one caller's
jobs or answers are not another's even on a keyless local service.
"""

from __future__ import annotations

import dataclasses

CALLER = "faceserve.caller"  # the ASGI scope key the access middleware sets

# Scopes a key may carry (docs/security.md): each route declares the one it needs.
ANALYZE, ENROL, ADMIN = "analyze", "enrol", "admin"
SCOPES = (ANALYZE, ENROL, ADMIN)


@dataclasses.dataclass(frozen=True)
class Caller:
    address: str  # the client's address as the server saw it ("" when the transport gives none)
    key_id: str | None = None  # the presented key's id (never the key); None without keys
    scopes: frozenset[str] = frozenset(SCOPES)

    @property
    def principal(self) -> str:
        """The owner recorded for what this caller creates: its key's id, or its address without keys."""
        return f"key:{self.key_id}" if self.key_id is not None else f"client:{self.address}"


# The CLI and other in-process callers: the machine's own user, with every scope.
LOCAL = Caller(address="local")


def client_address(scope: dict) -> str:
    client = scope.get("client")
    return str(client[0]) if client else ""


def caller_of(scope: dict) -> Caller:
    """The request's caller: as the access middleware decided, else (no middleware) its client address."""
    caller = scope.get(CALLER)
    return caller if isinstance(caller, Caller) else Caller(address=client_address(scope))
