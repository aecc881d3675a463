"""``nimctl run --lora-dir DIR --lora-refresh 1`` in a container: the folder mounted read-only and
labelled, its adapters served, ``lora add/rm`` through the host folder, and a load at run time
of an adapter copied into the container (put_archive), each answering ``chat --model``."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nimctl import contract
from tests.docker.conftest import RUN_TIMEOUT_S, Cli, free_port

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.docker

NAME = "nimctl-e2e-lora"


@dataclasses.dataclass
class Served:
    url: str
    lora_dir: Path
    demo: Path


@pytest.fixture(scope="module")
def served(
    docker_client: DockerClient,
    cpu_image: str,
    nimctl: Cli,
    session_dirs: dict[str, Path],
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Served]:
    from nimctl.lora.demo import ensure_demo_adapters
    from nimctl.store.layout import demo_loras_dir

    demo = ensure_demo_adapters("tiny-llm", demo_loras_dir(session_dirs["cache"]))
    lora_dir = tmp_path_factory.mktemp("loras")
    for name in ("tiny-llm-lora-r8", "tiny-llm-lora-broken"):
        shutil.copytree(demo / name, lora_dir / name)
    port = free_port()
    code, _, err = nimctl(
        "run", "tiny-llm", "-d", "--runtime", "docker", "--name", NAME, "--port", str(port),
        "--image", cpu_image, "--cache", str(session_dirs["cache"]), "--timeout", RUN_TIMEOUT_S,
        "--lora-dir", str(lora_dir), "--lora-refresh", "1",
        "-e", f"{contract.MAX_LORA_RANK}=16", "-e", f"{contract.ALLOW_LORA_UPDATES}=true",
    )  # fmt: skip
    try:
        assert code == 0, err
        yield Served(f"http://127.0.0.1:{port}", lora_dir, demo)
    finally:
        nimctl("stop", NAME)
        for container in docker_client.containers.list(all=True, filters={"name": NAME}):
            container.remove(force=True)


def test_the_folder_is_mounted_read_only_labelled_and_served(
    served: Served, docker_client: DockerClient, nimctl: Cli
) -> None:
    attrs = docker_client.containers.get(NAME).attrs
    labels = attrs["Config"]["Labels"]
    assert labels[contract.LORA_DIR_LABEL] == str(served.lora_dir.resolve())
    assert labels[contract.LORA_REFRESH_LABEL] == "1"
    mount = next(m for m in attrs["Mounts"] if m["Destination"] == contract.CONTAINER_LORA)
    assert mount["RW"] is False

    code, out, err = nimctl("lora", "ls", "--instance", NAME, "--format", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["source"] == contract.CONTAINER_LORA and data["refresh_interval"] == 1.0
    states = {a["name"]: a["state"] for a in data["adapters"]}
    assert states == {"tiny-llm-lora-broken": "skipped", "tiny-llm-lora-r8": "loaded"}
    code, out, err = nimctl("chat", "--url", served.url, "--model", "tiny-llm-lora-r8", "--max-tokens", "4",
                            "--no-stream", "-f", "json", "Hello")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["model"] == "tiny-llm-lora-r8"


def test_add_and_rm_through_the_host_folder(served: Served, nimctl: Cli) -> None:
    name = "tiny-llm-lora-r16"
    code, out, err = nimctl("lora", "add", name, str(served.demo / name), "--instance", NAME, "-f", "json")
    assert code == 0, err
    assert json.loads(out)["way"] == "folder" and (served.lora_dir / name).is_dir()
    code, _, err = nimctl(
        "chat", "--url", served.url, "--model", name, "--max-tokens", "4", "--no-stream", "Hi"
    )
    assert code == 0, err
    code, _, err = nimctl("lora", "rm", name, "--instance", NAME)
    assert code == 0, err
    assert not (served.lora_dir / name).exists()
    code, _, err = nimctl(
        "chat", "--url", served.url, "--model", name, "--max-tokens", "4", "--no-stream", "Hi"
    )
    assert code == 6 and f"The model `{name}` does not exist" in err


def test_a_runtime_load_of_an_adapter_copied_into_the_container(
    served: Served, docker_client: DockerClient, cli_env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The way a container without a host folder takes an adapter (its folder named with -e): the
    instance is read without its label, so add copies the adapter in with put_archive and loads it."""
    from nimctl.cli._target import make_client
    from nimctl.runtime import lora_ops
    from nimctl.runtime.manage import find_instance

    for key, value in cli_env.items():
        monkeypatch.setenv(key, value)
    found = find_instance(NAME)
    try:
        instance = dataclasses.replace(found.handle.to_instance(), lora_dir=None)
    finally:
        found.close()
    name = "uploaded-r16"
    with make_client(served.url, None) as client:
        change = lora_ops.add_adapter(client, name, served.demo / "tiny-llm-lora-r16", instance=instance)
        assert (change.way, change.path) == ("runtime", f"{contract.CONTAINER_LORA_UPLOADS}/{name}")
        assert change.adapter is not None and change.adapter.rank == 16
        container = docker_client.containers.get(NAME)
        listing = container.exec_run(["ls", f"{contract.CONTAINER_LORA_UPLOADS}/{name}"]).output.decode()
        assert "adapter_model.safetensors" in listing and "adapter_config.json" in listing
        reply = client.chat([{"role": "user", "content": "Hi"}], model=name, max_tokens=4)
        assert reply.model == name

        removed = lora_ops.remove_adapter(client, name, instance=instance)
        assert removed.way == "runtime"
        assert lora_ops.lora_settings(client).find(name) is None
        exit_code, _ = container.exec_run(["test", "-e", f"{contract.CONTAINER_LORA_UPLOADS}/{name}"])
        assert exit_code != 0, "the container's copy is removed with the adapter"
