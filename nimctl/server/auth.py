"""API keys: a pure ASGI middleware that wants ``Authorization: Bearer KEY`` on every route but
the health probes.

Keys come from ``NIMCTL_API_KEY_FILE`` (one a line: the key itself, or ``sha256:HEX`` of it;
blank lines and ``#`` comments are skipped) and ``NIMCTL_API_KEY``. With none configured the
server is open, as NIM is; ``nimctl run`` gives every instance a key of its own.

Per request the cost is one SHA-256 of the presented token and one constant-time comparison
per configured key (``hmac.compare_digest`` over digests, so neither the key's length nor where
it first differs shows in the timing); no routing, no framework objects. The key itself is never
logged; a failed attempt is, with the client's address, at most once per
:data:`FAILURE_LOG_INTERVAL_S` (the lines in between are counted in the next one).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nimctl import contract
from nimctl.errors import ConfigError
from nimctl.server.http_errors import error_body

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Receive, Scope, Send

    from nimctl.server.config import ServerConfig

log = logging.getLogger("nimctl.server.auth")

OPEN_PATHS = frozenset({"/v1/health/live", "/v1/health/ready"})
METRICS_PATH = "/v1/metrics"
# Where the key's identity goes in the ASGI scope (and in scope["state"]), for per-key limits.
SCOPE_KEY = "nimctl.key"
FAILURE_LOG_INTERVAL_S = 10.0
_HASH_PREFIX = "sha256:"


@dataclass(frozen=True)
class KeyEntry:
    digest: bytes  # sha256 of the key
    identity: str  # what the rest of the server may know of it: "key-" + the digest's first 12 hex


def digest_of(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def parse_keys(lines: Iterable[str], *, source: str) -> list[KeyEntry]:
    """Entries from key lines; a malformed ``sha256:`` line is a ConfigError naming only its line."""
    entries: list[KeyEntry] = []
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.lower().startswith(_HASH_PREFIX):
            hex_digest = line[len(_HASH_PREFIX) :].strip().lower()
            try:
                digest = bytes.fromhex(hex_digest)
            except ValueError:
                digest = b""
            if len(digest) != hashlib.sha256().digest_size:
                raise ConfigError(
                    f"{source} line {number}: sha256: needs 64 hex digits",
                    hint="write the key itself, or sha256: and the hex SHA-256 of it",
                )
        else:
            digest = digest_of(line)
        entries.append(KeyEntry(digest, f"key-{digest.hex()[:12]}"))
    return entries


def load_keys(config: ServerConfig) -> list[KeyEntry]:
    """Every key the configuration names; an unreadable key file stops the server at start."""
    entries: list[KeyEntry] = []
    if config.api_key_file is not None:
        path = Path(config.api_key_file)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read {contract.API_KEY_FILE}={path}: {exc.strerror or exc}",
                hint=f"fix or unset {contract.API_KEY_FILE}",
            ) from None
        entries += parse_keys(text.splitlines(), source=contract.API_KEY_FILE)
        if not entries:
            raise ConfigError(
                f"{contract.API_KEY_FILE}={path} holds no key",
                hint="write one key a line (or unset the variable for an open server)",
            )
    if config.api_key is not None and config.api_key.get_secret_value().strip():
        entries += parse_keys([config.api_key.get_secret_value()], source=contract.API_KEY)
    return entries


class KeyCheck:
    """The key check itself, shared by :class:`ApiKeyMiddleware` and the lean inference path
    (:mod:`nimctl.server.lean_relay`), which call it with the Authorization header they found."""

    def __init__(self, keys: list[KeyEntry], *, public_metrics: bool = False) -> None:
        self._keys = tuple(keys)
        self.active = bool(self._keys)
        self.open_paths = OPEN_PATHS | ({METRICS_PATH} if public_metrics else set())
        self._last_log = 0.0
        self._unlogged = 0
        self._missing = _response_parts("missing API key: send 'Authorization: Bearer KEY'")
        self._wrong = _response_parts("invalid API key")

    def identify(self, authorization: bytes | None) -> str | None:
        """The identity of the key in an ``Authorization`` header's value; None when it names none."""
        token = _bearer_token(authorization) if authorization is not None else None
        if token is None:
            return None
        presented = digest_of(token)
        found = None
        for entry in self._keys:  # no early exit: every request compares against every key
            if hmac.compare_digest(presented, entry.digest):
                found = entry.identity
        return found

    async def refuse(self, scope: Scope, authorization: bytes | None, send: Send) -> None:
        """Answer the 401 for a request whose header ``identify`` did not accept, and log it (rarely)."""
        missing = authorization is None or _bearer_token(authorization) is None
        self._log_failure(scope, missing=missing)
        body, headers = self._missing if missing else self._wrong
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _log_failure(self, scope: Scope, *, missing: bool) -> None:
        now = time.monotonic()
        if now - self._last_log < FAILURE_LOG_INTERVAL_S:
            self._unlogged += 1
            return
        client = scope.get("client")
        address = f"{client[0]}:{client[1]}" if client else "unknown"
        more = f" ({self._unlogged} more since the last line)" if self._unlogged else ""
        reason = "no API key" if missing else "a wrong API key"
        log.warning("refused %s %s from %s: %s%s", scope.get("method"), scope["path"], address, reason, more)
        self._last_log, self._unlogged = now, 0


class ApiKeyMiddleware:
    """401 in OpenAI's shape, with ``WWW-Authenticate: Bearer``, for a request without a known key."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        check: KeyCheck | None = None,
        keys: list[KeyEntry] | None = None,
        public_metrics: bool = False,
    ) -> None:
        self.app = app
        self.check = check or KeyCheck(keys or [], public_metrics=public_metrics)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self.check.active or scope["path"] in self.check.open_paths:
            await self.app(scope, receive, send)
            return
        authorization = _header(scope, b"authorization")
        identity = self.check.identify(authorization)
        if identity is None:
            await self.check.refuse(scope, authorization, send)
            return
        scope[SCOPE_KEY] = identity
        scope.setdefault("state", {})[SCOPE_KEY] = identity
        await self.app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


def _bearer_token(authorization: bytes) -> str | None:
    scheme, _, token = authorization.decode("latin-1").strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _response_parts(message: str) -> tuple[bytes, list[tuple[bytes, bytes]]]:
    """The body and headers of one 401, built once at start."""
    body = json.dumps(error_body(401, message)).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"www-authenticate", b'Bearer realm="nimctl"'),
    ]
    return body, headers


def key_check(config: ServerConfig) -> KeyCheck:
    """The key check ``config`` asks for (inactive when it names no key)."""
    return KeyCheck(load_keys(config), public_metrics=config.public_metrics)
