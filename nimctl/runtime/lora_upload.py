"""Copying a LoRA adapter into a running container, for a load at run time (``nimctl lora add``).

A container sees no host folder but those mounted when it started, so an adapter added later
travels as a tar archive through the Docker API (``put_archive``, as ``docker cp`` does) to
:data:`nimctl.contract.CONTAINER_LORA_UPLOADS`, and the server is then told that path.
"""

from __future__ import annotations

import contextlib
import io
import tarfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from nimctl import contract
from nimctl.errors import RuntimeFailure

if TYPE_CHECKING:
    from nimctl.runtime.instances import Instance


class ArchiveTarget(Protocol):
    """What is used of a docker SDK Container (a test may stand in for one)."""

    def put_archive(self, path: str, data: bytes) -> bool: ...

    def exec_run(self, cmd: list[str]) -> object: ...


def upload_path(name: str) -> str:
    """Where adapter ``name`` lands in the container."""
    return f"{contract.CONTAINER_LORA_UPLOADS}/{name}"


def adapter_archive(folder: Path, name: str, *, owner: tuple[int, int] = (0, 0)) -> bytes:
    """A tar of ``folder`` as ``<uploads folder's name>/<name>/...``, to unpack in the uploads
    folder's parent (which exists: put_archive needs an existing target). Files 0644 and folders
    0755, owned by ``owner``: the container's user must read them, whoever it is. Links are not
    followed out of the folder: only regular files and folders go."""
    uploads = PurePosixPath(contract.CONTAINER_LORA_UPLOADS).name
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:

        def add_dir(arcname: str) -> None:
            info = tarfile.TarInfo(arcname)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            info.uid, info.gid = owner
            tar.addfile(info)

        add_dir(uploads)
        add_dir(f"{uploads}/{name}")
        for path in sorted(folder.rglob("*")):
            arcname = f"{uploads}/{name}/{path.relative_to(folder).as_posix()}"
            if path.is_symlink():
                continue
            if path.is_dir():
                add_dir(arcname)
            elif path.is_file():
                info = tarfile.TarInfo(arcname)
                info.size, info.mode = path.stat().st_size, 0o644
                info.uid, info.gid = owner
                with path.open("rb") as handle:
                    tar.addfile(info, handle)
    return buffer.getvalue()


def upload_adapter(
    container: ArchiveTarget, folder: Path, name: str, *, owner: tuple[int, int] = (0, 0)
) -> str:
    """Copy ``folder`` into ``container`` as adapter ``name``; the path the server is to load."""
    target = upload_path(name)
    # A copy left by an earlier add of the name would mix its files with these ones.
    remove_upload(container, name)
    parent = str(PurePosixPath(contract.CONTAINER_LORA_UPLOADS).parent)
    if not container.put_archive(parent, adapter_archive(folder, name, owner=owner)):
        raise RuntimeFailure(f"Docker did not copy the adapter into the container at {target}")
    return target


def remove_upload(container: ArchiveTarget, name: str) -> None:
    """Remove adapter ``name``'s copy from the container, if any (best effort: it is in /tmp)."""
    with contextlib.suppress(Exception):
        container.exec_run(["rm", "-rf", "--", upload_path(name)])


def upload_to_instance(instance: Instance, folder: Path, name: str) -> str:
    """Copy ``folder`` into ``instance``'s container as adapter ``name``; the path to load."""
    from nimctl.runtime.docker_client import connect, translated

    client = connect()
    try:
        with translated("copying a LoRA adapter into it", instance.name):
            container = client.containers.get(instance.ident)
            return upload_adapter(container, folder, name, owner=container_owner(container))
    finally:
        client.close()


def remove_from_instance(instance: Instance, name: str) -> None:
    """Remove adapter ``name``'s copy from ``instance``'s container; a container that cannot be
    reached keeps it (it is in /tmp, and goes with the container)."""
    from nimctl.errors import NimctlError
    from nimctl.runtime.docker_client import connect, translated

    with contextlib.suppress(NimctlError):
        client = connect()
        try:
            with translated("removing a LoRA adapter's copy", instance.name):
                remove_upload(client.containers.get(instance.ident), name)
        finally:
            client.close()


def container_owner(container: object) -> tuple[int, int]:
    """The numeric user:group the container runs as (``nimctl run`` sets the caller's), else root."""
    user = str(getattr(container, "attrs", {}).get("Config", {}).get("User") or "")
    uid, _, gid = user.partition(":")
    return (int(uid), int(gid or uid)) if uid.isdigit() and (not gid or gid.isdigit()) else (0, 0)
