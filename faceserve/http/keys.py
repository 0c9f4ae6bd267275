"""API keys and their scopes (docs/security.md): what a key file holds, how a key is made, how a presented key is
found.

A key file (FACESERVE_API_KEYS_FILE) holds one key a line, `<key id> <scope>[,<scope>...] sha256:<hex>`, '#'
comments: the SHA-256 of the key, never the key, so that the file (a Secret, a backup) gives no access. Legacy
plain keys (FACESERVE_API_KEYS, comma-separated) carry every scope; their id is a prefix of their digest.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import re
import secrets
from pathlib import Path

from faceserve.http.caller import SCOPES

DIGEST_PREFIX = "sha256:"
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX_DIGEST = re.compile(r"[0-9a-f]{64}")
LEGACY_ID_CHARS = 12


def digest(key: str | bytes) -> bytes:
    return hashlib.sha256(key if isinstance(key, bytes) else key.encode()).digest()


@dataclasses.dataclass(frozen=True)
class ApiKey:
    id: str
    scopes: frozenset[str]
    digest: bytes  # SHA-256 of the key

    @property
    def line(self) -> str:
        """The key file's line for this key."""
        return f"{self.id} {','.join(s for s in SCOPES if s in self.scopes)} {DIGEST_PREFIX}{self.digest.hex()}"


def parse_scopes(text: str) -> frozenset[str]:
    scopes = frozenset(s.strip() for s in text.split(",") if s.strip())
    unknown = sorted(scopes - set(SCOPES))
    if unknown or not scopes:
        raise ValueError(f"scopes must be some of {', '.join(SCOPES)}; got {text!r}")
    return scopes


def parse_key_line(line: str) -> ApiKey:
    """One key file line; ValueError says what is wrong without repeating the line (it may hold a plain key)."""
    fields = line.split()
    if len(fields) != 3:
        raise ValueError("a key line is `<key id> <scope>[,<scope>...] sha256:<hex digest of the key>`")
    key_id, scopes, hashed = fields
    if not _ID.fullmatch(key_id):
        raise ValueError("a key id is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    if not (hashed.startswith(DIGEST_PREFIX) and _HEX_DIGEST.fullmatch(hashed[len(DIGEST_PREFIX):])):
        raise ValueError(f"the third field must be {DIGEST_PREFIX} and 64 lower-case hex digits (`python -m "
                         "faceserve keys new` writes the line)")
    return ApiKey(key_id, parse_scopes(scopes), bytes.fromhex(hashed[len(DIGEST_PREFIX):]))


def read_key_file(path: Path) -> list[ApiKey]:
    keys = []
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            keys.append(parse_key_line(line))
        except ValueError as error:
            raise ValueError(f"{path}, line {number}: {error}") from None
    return keys


def legacy_key(key: str) -> ApiKey:
    hashed = digest(key)
    return ApiKey(hashed.hex()[:LEGACY_ID_CHARS], frozenset(SCOPES), hashed)


def key_ring(keys: list[ApiKey]) -> tuple[ApiKey, ...]:
    """`keys` checked as one set: ids and keys unique (a duplicated key would be two ids for one caller)."""
    for attribute, name in (("id", "key id"), ("digest", "key")):
        values = [getattr(k, attribute) for k in keys]
        if len(set(values)) != len(values):
            duplicated = next(k.id for k in keys if values.count(getattr(k, attribute)) > 1)
            raise ValueError(f"the {name} of `{duplicated}` is configured twice")
    return tuple(keys)


def new_key(key_id: str, scopes: frozenset[str]) -> tuple[str, ApiKey]:
    """A fresh random key and its key file entry."""
    if not _ID.fullmatch(key_id):
        raise ValueError("a key id is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    key = "fs_" + secrets.token_urlsafe(32)
    return key, ApiKey(key_id, frozenset(scopes), digest(key))


def find_key(keys: tuple[ApiKey, ...], presented: bytes) -> ApiKey | None:
    """The configured key `presented` is, compared in constant time (on digests: neither content nor length
    leaks) and against every key (no early exit)."""
    candidate = digest(presented)
    found = None
    for key in keys:
        if hmac.compare_digest(candidate, key.digest):
            found = key
    return found
