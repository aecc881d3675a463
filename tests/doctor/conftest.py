"""Machines that fail each of doctor's items: a fake NVML, a closed or silent daemon socket, a tiny
filesystem (a real tmpfs: we mount it, so a full disk is a real one), a taken port."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from nimctl.doctor import Probes


def _mount_tmpfs(folder: Path, size: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {done.stderr.strip()}")


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``small_fs("1m")``: a folder on a tmpfs of that size, unmounted after the test."""
    mounted: list[Path] = []

    def make(size: str) -> Path:
        folder = tmp_path / f"fs-{len(mounted)}"
        _mount_tmpfs(folder, size)
        mounted.append(folder)
        return folder

    yield make
    for folder in mounted:
        subprocess.run(["umount", str(folder)], capture_output=True, timeout=30, check=False)


@contextlib.contextmanager
def _unix_socket(*, listen: bool) -> Iterator[str]:
    path = Path(f"/tmp/nimctl-doctor-{uuid.uuid4().hex[:8]}.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    if listen:
        sock.listen(16)
    try:
        yield f"unix://{path}"
    finally:
        sock.close()
        path.unlink(missing_ok=True)


@pytest.fixture
def closed_socket() -> Iterator[str]:
    """DOCKER_HOST of a socket file nothing accepts on (bound, never listening): refused at once."""
    with _unix_socket(listen=False) as address:
        yield address


@pytest.fixture
def silent_socket() -> Iterator[str]:
    """DOCKER_HOST of a socket that takes connections and never answers: only a timeout ends a call."""
    with _unix_socket(listen=True) as address:
        yield address


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port of 127.0.0.1 something listens on."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(1)
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


@pytest.fixture
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A clean environment for the probes: no daemon, no token, no assumed GPUs, an empty cache."""
    for name in ("HF_TOKEN", "HF_TOKEN_PATH", "NGC_API_KEY", "NIMCTL_ASSUME_GPUS", "NIM_MODEL_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NIMCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    return {
        **os.environ,
        "DOCKER_HOST": f"unix://{tmp_path}/no-docker.sock",
        "HF_HOME": str(tmp_path / "hf-home"),
    }


def probes(environ: dict[str, str], **overrides: Any) -> Probes:
    return Probes(environ=environ, **overrides)
