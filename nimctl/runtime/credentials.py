"""Each instance's credentials: its API key and TLS files, in a folder of its own under nimctl's
state folder (``state_dir()/credentials/NAME``: the folder 0700, each file 0600).

``nimctl run`` plans them (:class:`Security`, part of the run spec), writes them just before the
instance starts (:func:`create`) and hands the server the folder: a container gets it mounted
read-only at ``contract.CONTAINER_CREDENTIALS``, a host process gets the host paths. The key
itself is never on a command line or in an environment, so neither ``ps`` nor ``docker
inspect`` shows it. The client commands find an instance's credentials by its URL
(:func:`for_url`) and ``nimctl stop`` removes them (:func:`remove`).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import ssl
from dataclasses import dataclass, field
from pathlib import Path

from nimctl import contract
from nimctl.runtime.paths import state_dir

RECORD_FILE = "instance.json"
CLIENT_CERT_FILE_NAME = "client.crt"
CLIENT_KEY_FILE_NAME = "client.key"


@dataclass(frozen=True)
class Security:
    """What an instance gets: a key (``api_key``), TLS, mutual TLS, and the extra TLS host names."""

    api_key: bool = True
    tls: bool = False
    mtls: bool = False
    tls_hosts: tuple[str, ...] = field(default_factory=tuple)
    # --i-know: serve without a key on an address others can reach, on purpose.
    open_to_network: bool = False

    @property
    def any(self) -> bool:
        return self.api_key or self.tls


def credentials_root() -> Path:
    return state_dir() / "credentials"


def folder_for(name: str) -> Path:
    return credentials_root() / name


@dataclass(frozen=True)
class Credentials:
    """One instance's credentials folder, as the client side reads it."""

    folder: Path

    @property
    def api_key_file(self) -> Path:
        return self.folder / contract.API_KEYS_FILE_NAME

    @property
    def ca_file(self) -> Path:
        return self.folder / contract.CA_CERT_FILE_NAME

    @property
    def client_cert(self) -> Path:
        return self.folder / CLIENT_CERT_FILE_NAME

    @property
    def client_key(self) -> Path:
        return self.folder / CLIENT_KEY_FILE_NAME

    def record(self) -> dict[str, str]:
        with contextlib.suppress(OSError, ValueError):
            data = json.loads((self.folder / RECORD_FILE).read_text(encoding="utf-8"))
            if isinstance(data, dict):
                return {str(k): str(v) for k, v in data.items()}
        return {}

    def api_key(self) -> str | None:
        with contextlib.suppress(OSError):
            for line in self.api_key_file.read_text(encoding="utf-8").splitlines():
                if line.strip() and not line.startswith("#"):
                    return line.strip()
        return None

    def ssl_context(self) -> ssl.SSLContext | None:
        """Trust the instance's own CA (and show its client certificate, for mTLS); None without TLS."""
        if not self.ca_file.is_file():
            return None
        context = ssl.create_default_context(cafile=str(self.ca_file))
        if self.client_cert.is_file():
            context.load_cert_chain(str(self.client_cert), str(self.client_key))
        return context


def _write(path: Path, data: bytes) -> None:
    """Created 0600 from the start: the secret is never readable by others, not even briefly."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    os.chmod(path, 0o600)  # an existing file keeps its mode through O_CREAT


def create(name: str, url: str, security: Security) -> Credentials:
    """Write a fresh key (and CA, server and client certificates) for instance ``name``."""
    folder = folder_for(name)
    shutil.rmtree(folder, ignore_errors=True)  # an ended instance's leftovers: never reused
    folder.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    folder.mkdir(mode=0o700)
    os.chmod(folder, 0o700)  # mkdir's mode is masked by the umask
    if security.api_key:
        _write(folder / contract.API_KEYS_FILE_NAME, (secrets.token_urlsafe(32) + "\n").encode())
    if security.tls:
        from nimctl.runtime import certs

        ca, ca_key = certs.make_ca(name)
        server = certs.issue(ca.cert_pem, ca_key, name, hosts=security.tls_hosts)
        _write(folder / contract.CA_CERT_FILE_NAME, ca.cert_pem)
        _write(folder / contract.SERVER_CERT_FILE_NAME, server.cert_pem)
        _write(folder / contract.SERVER_KEY_FILE_NAME, server.key_pem)
        if security.mtls:
            client = certs.issue(ca.cert_pem, ca_key, f"nimctl client of {name}", client=True)
            _write(folder / CLIENT_CERT_FILE_NAME, client.cert_pem)
            _write(folder / CLIENT_KEY_FILE_NAME, client.key_pem)
    _write(folder / RECORD_FILE, json.dumps({"name": name, "url": url}).encode())
    return Credentials(folder)


def load(name: str) -> Credentials | None:
    folder = folder_for(name)
    return Credentials(folder) if folder.is_dir() else None


def for_url(url: str) -> Credentials | None:
    """The credentials of the instance at ``url`` (as its record spells it), if nimctl started one."""
    root = credentials_root()
    if not root.is_dir():
        return None
    wanted = _same_url(url)
    for folder in sorted(root.iterdir()):
        found = Credentials(folder)
        if _same_url(found.record().get("url", "")) == wanted:
            return found
    return None


def _same_url(url: str) -> str:
    """``http://h:1``, ``http://h:1/`` and ``http://h:1/v1`` are one server."""
    stripped = url.strip().rstrip("/")
    return stripped.removesuffix("/v1").lower()


def remove(name: str) -> None:
    shutil.rmtree(folder_for(name), ignore_errors=True)
