"""``nimctl lora add/rm``'s library (nimctl.runtime.lora_ops, lora_upload) against a stand-in server.

The stand-in answers ``/v1/metadata``'s ``loraAdapters`` as the front does, from a real scan of
its folder with nimctl.lora.folder at every request (a server that rescans at once), and the
runtime load/unload routes. It proves the copy, the marker, the wait and the choice of way; the
real server is the engine tests' (tests/cli/test_lora_cli.py).
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from nimctl import contract
from nimctl.client.http import NimClient
from nimctl.errors import RequestRejectedError, UsageError, WaitTimeoutError
from nimctl.lora.folder import ADDED_MARKER, AdapterError, read_adapter, scan_folder
from nimctl.runtime import lora_ops, lora_upload
from nimctl.runtime.instances import Instance
from tests.json_http import send_json

BASE = "builtin://tiny-llm"


def write_adapter(folder: Path, *, rank: int = 8, base: str = BASE, weights: bool = True) -> Path:
    """A small PEFT adapter folder: a config and a safetensors header naming lora_A/lora_B tensors."""
    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "peft_type": "LORA",
        "r": rank,
        "lora_alpha": 2 * rank,
        "target_modules": ["q_proj", "v_proj"],
        "base_model_name_or_path": base,
    }
    (folder / "adapter_config.json").write_text(json.dumps(config), encoding="utf-8")
    if weights:
        header = {
            "base_model.model.layers.0.q_proj.lora_A.weight": {
                "dtype": "F32",
                "shape": [0],
                "data_offsets": [0, 0],
            },
            "base_model.model.layers.0.q_proj.lora_B.weight": {
                "dtype": "F32",
                "shape": [0],
                "data_offsets": [0, 0],
            },
        }
        data = json.dumps(header).encode()
        (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(data)) + data)
    return folder


class LoraStandIn:
    """A server's LoRA side: ``source`` scanned at each metadata request; runtime loads kept apart."""

    def __init__(
        self, source: Path | None, *, refresh: float | None = 1.0, runtime_updates: bool = False
    ) -> None:
        self.source = source
        self.refresh = refresh
        self.runtime_updates = runtime_updates
        self.max_rank = 16
        self.hidden_names: set[str] = set()  # adapters the "server" has not picked up yet
        self.runtime: dict[str, dict[str, Any]] = {}
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def metadata(self) -> dict[str, Any]:
        if self.source is None:
            return {"version": "test", "loraAdapters": None}
        loaded: list[dict[str, Any]] = []
        skipped: list[dict[str, Any]] = []
        for found in scan_folder(self.source, max_rank=self.max_rank, base_names=["tiny-llm"]):
            if found.name in self.hidden_names:
                continue
            if hasattr(found, "reason"):
                skipped.append(found.to_dict())
            else:
                loaded.append({**found.to_dict(), "origin": "folder"})
        loaded += self.runtime.values()
        lora = {
            "source": str(self.source),
            "refreshInterval": self.refresh,
            "runtimeUpdates": self.runtime_updates,
            "maxLoraRank": self.max_rank,
            "maxLoras": 8,
            "loaded": loaded,
            "skipped": skipped,
        }
        return {"version": "test", "loraAdapters": lora}

    def post(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        self.calls.append((path, body))
        name = body.get("lora_name", "")
        if not self.runtime_updates:
            return 403, _error("runtime updates are off", 403)
        if path == "/v1/load_lora_adapter":
            if name in self.runtime:
                return 409, _error(f"adapter {name} is loaded already", 409)
            try:
                adapter = read_adapter(Path(body["lora_path"]))
            except AdapterError as exc:
                return 400, _error(str(exc), 400)
            self.runtime[name] = {**adapter.to_dict(), "name": name, "origin": "runtime"}
            return 200, {"object": "lora.adapter", **self.runtime[name]}
        if path == "/v1/unload_lora_adapter":
            if self.runtime.pop(name, None) is None:
                return 404, _error(f"no adapter {name}", 404)
            return 200, {"object": "lora.adapter", "name": name, "unloaded": True}
        return 404, _error("unknown path", 404)


def _error(message: str, code: int) -> dict[str, Any]:
    return {"error": {"message": message, "type": "BadRequestError", "param": None, "code": code}}


def serve(stand_in: LoraStandIn) -> tuple[ThreadingHTTPServer, str]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: dict[str, Any]) -> None:
            send_json(self, status, body)

        def do_GET(self) -> None:
            if self.path == "/v1/metadata":
                self._answer(200, stand_in.metadata())
            else:
                self._answer(404, _error("unknown path", 404))

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
            self._answer(*stand_in.post(self.path, body))

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


@pytest.fixture
def lora_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "loras"
    write_adapter(folder / "static-r8")
    return folder


@pytest.fixture
def stand_in(lora_dir: Path) -> Iterator[tuple[LoraStandIn, NimClient]]:
    fake = LoraStandIn(lora_dir)
    server, url = serve(fake)
    try:
        with NimClient(url) as client:
            yield fake, client
    finally:
        server.shutdown()
        server.server_close()


def instance(runtime: str = "local", lora_dir: Path | None = None, refresh: float | None = None) -> Instance:
    return Instance(
        name="nimctl-tiny-llm", runtime=runtime, model="tiny-llm", profile_id=None, profile_name=None,  # type: ignore[arg-type]
        state="running", exit_code=None, url="http://127.0.0.1:1", started_at=None, ident="abc123",
        lora_dir=str(lora_dir) if lora_dir else None, lora_refresh=refresh,
    )  # fmt: skip


def test_dynamic_add_copies_with_the_marker_and_waits_for_the_server(
    stand_in: tuple[LoraStandIn, NimClient], lora_dir: Path, tmp_path: Path
) -> None:
    _, client = stand_in
    source = write_adapter(tmp_path / "mine", rank=16)
    change = lora_ops.add_adapter(client, "mine-r16", source)
    assert (change.action, change.way, change.path) == ("added", "folder", str(lora_dir / "mine-r16"))
    assert change.adapter is not None and change.adapter.rank == 16 and change.adapter.origin == "folder"
    copied = lora_dir / "mine-r16"
    assert json.loads((copied / ADDED_MARKER).read_text())["source"] == str(source.resolve())
    assert (copied / "adapter_model.safetensors").read_bytes() == (
        source / "adapter_model.safetensors"
    ).read_bytes()
    assert sorted(p.name for p in lora_dir.iterdir()) == ["mine-r16", "static-r8"], "no hidden copy left"
    assert oct(copied.stat().st_mode & 0o777) == "0o755"

    removed = lora_ops.remove_adapter(client, "mine-r16")
    assert (removed.action, removed.way) == ("removed", "folder")
    assert sorted(p.name for p in lora_dir.iterdir()) == ["static-r8"]
    assert lora_ops.lora_settings(client).find("mine-r16") is None


def test_the_instance_label_names_the_folder(
    stand_in: tuple[LoraStandIn, NimClient], lora_dir: Path, tmp_path: Path
) -> None:
    fake, client = stand_in
    fake.source = tmp_path / "not-here-in-the-container-sense"
    fake.source.mkdir()
    # The label wins over the server's own path (a container's /opt/nim/loras is not a host path).
    found = instance("docker", lora_dir)
    assert lora_ops.host_folder(lora_ops.lora_settings(client), found, client.base_url) == lora_dir
    assert lora_ops.host_folder(lora_ops.lora_settings(client), instance("docker"), client.base_url) is None
    assert lora_ops.host_folder(lora_ops.lora_settings(client), None, client.base_url) == fake.source
    # Another machine's folder of the same path is not this one.
    assert lora_ops.host_folder(lora_ops.lora_settings(client), None, "http://192.0.2.1:8000") is None


def test_rm_leaves_a_folder_nimctl_did_not_copy(
    stand_in: tuple[LoraStandIn, NimClient], lora_dir: Path
) -> None:
    _, client = stand_in
    with pytest.raises(UsageError) as caught:
        lora_ops.remove_adapter(client, "static-r8")
    assert "was not put there by nimctl lora add" in caught.value.message
    assert "rm -r" in (caught.value.hint or "")
    assert (lora_dir / "static-r8" / "adapter_config.json").is_file()


def test_a_skipped_copy_is_removed_and_the_reason_given(
    stand_in: tuple[LoraStandIn, NimClient], lora_dir: Path, tmp_path: Path
) -> None:
    _, client = stand_in
    source = write_adapter(tmp_path / "other", base="meta-llama/Llama-3.1-8B")
    with pytest.raises(UsageError) as caught:
        lora_ops.add_adapter(client, "other-base", source)
    assert caught.value.message.startswith("the server skipped adapter other-base: made for base model")
    assert sorted(p.name for p in lora_dir.iterdir()) == ["static-r8"]


def test_a_broken_or_too_large_adapter_is_refused_before_anything(
    stand_in: tuple[LoraStandIn, NimClient], lora_dir: Path, tmp_path: Path
) -> None:
    _, client = stand_in
    with pytest.raises(UsageError, match="the adapter's weights are missing"):
        lora_ops.add_adapter(client, "broken", write_adapter(tmp_path / "broken", weights=False))
    with pytest.raises(UsageError, match="rank 32 is above the server's largest, 16"):
        lora_ops.add_adapter(client, "big", write_adapter(tmp_path / "big", rank=32))
    with pytest.raises(UsageError, match="has an adapter named static-r8 already"):
        lora_ops.add_adapter(client, "static-r8", write_adapter(tmp_path / "again"))
    for bad in ("../up", ".hidden", "a/b", ""):
        with pytest.raises(UsageError, match="bad adapter name"):
            lora_ops.add_adapter(client, bad, write_adapter(tmp_path / "x"))
    assert sorted(p.name for p in lora_dir.iterdir()) == ["static-r8"]


def test_the_wait_ends_with_a_timeout_naming_the_interval(stand_in: tuple[LoraStandIn, NimClient]) -> None:
    fake, client = stand_in
    fake.hidden_names.add("late")
    with pytest.raises(
        WaitTimeoutError, match=r"does not list adapter late after 0.3 s \(it rescans every 1 s\)"
    ):
        lora_ops.wait_listed(client, "late", present=True, interval=1.0, timeout=0.3)


def test_runtime_updates_load_the_host_path_and_unload(
    stand_in: tuple[LoraStandIn, NimClient], tmp_path: Path
) -> None:
    fake, client = stand_in
    fake.refresh, fake.runtime_updates = None, True  # scanned once, runtime routes open
    source = write_adapter(tmp_path / "rt")
    change = lora_ops.add_adapter(client, "rt", source)
    assert (change.way, change.path) == ("runtime", str(source.resolve()))
    assert fake.calls[-1] == (
        "/v1/load_lora_adapter",
        {"lora_name": "rt", "lora_path": str(source.resolve())},
    )
    assert change.adapter is not None and change.adapter.origin == "runtime"
    assert not (tmp_path / "loras" / "rt").exists(), "nothing copied into a folder scanned only at start"

    removed = lora_ops.remove_adapter(client, "rt")
    assert (removed.action, removed.way) == ("removed", "runtime")
    assert fake.calls[-1] == ("/v1/unload_lora_adapter", {"lora_name": "rt"})
    # What the server refuses is its own answer (a 4xx: exit 6), with the hint to list them.
    with pytest.raises(RequestRejectedError) as caught:
        client.unload_lora_adapter("never-loaded")
    assert "no adapter never-loaded" in caught.value.message


def test_neither_way_and_no_lora_say_how_to_turn_them_on(
    stand_in: tuple[LoraStandIn, NimClient], tmp_path: Path
) -> None:
    fake, client = stand_in
    fake.refresh = None
    with pytest.raises(UsageError) as caught:
        lora_ops.add_adapter(client, "x", write_adapter(tmp_path / "x"))
    assert (
        "reads its adapters folder only at start and does not load adapters at run time"
        in caught.value.message
    )
    assert caught.value.hint == lora_ops.ENABLE_HINT and contract.ALLOW_LORA_UPDATES in caught.value.hint
    fake.refresh = 1.0  # rescans, but its folder is not on this host (a container's, no label)
    with pytest.raises(UsageError, match="which is not on this host"):
        lora_ops.add_adapter(client, "x", write_adapter(tmp_path / "x"), instance=instance("docker"))
    fake.source = None
    with pytest.raises(UsageError, match="serves no LoRA adapters"):
        lora_ops.remove_adapter(client, "x")


def test_the_archive_holds_the_adapter_readable_and_nothing_else(tmp_path: Path) -> None:
    source = write_adapter(tmp_path / "a")
    (source / "sub").mkdir()
    (source / "sub" / "notes.txt").write_text("x")
    (source / "link").symlink_to("/etc/passwd")
    data = lora_upload.adapter_archive(source, "mine", owner=(1000, 1000))
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        members = {m.name: m for m in tar.getmembers()}
    uploads = Path(contract.CONTAINER_LORA_UPLOADS).name
    names = ["adapter_config.json", "adapter_model.safetensors", "sub", "sub/notes.txt"]
    assert sorted(members) == sorted([uploads, f"{uploads}/mine", *(f"{uploads}/mine/{n}" for n in names)])
    assert all((m.uid, m.gid) == (1000, 1000) for m in members.values())
    assert {oct(m.mode) for m in members.values() if m.isdir()} == {"0o755"}
    assert {oct(m.mode) for m in members.values() if m.isfile()} == {"0o644"}


class FakeContainer:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.attrs = {"Config": {"User": "1000:1001"}}

    def put_archive(self, path: str, data: bytes) -> bool:
        self.calls.append(("put_archive", path))
        return True

    def exec_run(self, cmd: list[str]) -> object:
        self.calls.append(("exec_run", cmd))
        return (0, b"")


def test_the_upload_replaces_an_earlier_copy_and_names_the_container_path(tmp_path: Path) -> None:
    container = FakeContainer()
    where = lora_upload.upload_adapter(container, write_adapter(tmp_path / "a"), "mine")
    assert where == f"{contract.CONTAINER_LORA_UPLOADS}/mine"
    assert container.calls == [
        ("exec_run", ["rm", "-rf", "--", where]),
        ("put_archive", str(Path(contract.CONTAINER_LORA_UPLOADS).parent)),
    ]
    assert lora_upload.container_owner(container) == (1000, 1001)
    assert lora_upload.container_owner(object()) == (0, 0)
