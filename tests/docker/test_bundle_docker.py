"""The air-gap flow with the image: export a model pulled from the hub emulation together with the
server image, drop the image's tag, import into an empty cache, and start the re-imported image offline.

The image is gigabytes, so the suite makes one export with an image, in this one test.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from nimctl.runtime.images import image_exists
from nimctl.store import layout
from nimctl.store.pull import pull, require_cached
from tests.docker.conftest import RUN_TIMEOUT_S, Cli, free_port
from tests.hub_emulation import HubEmulation

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.docker

REPO = "nimctl-test/tiny-vlm"
MANIFEST = Path(__file__).resolve().parents[1] / "fixtures" / "tiny-vlm-hub.yaml"
NAME = f"nimctl-e2e-bundle-{os.getpid()}"  # another checkout's tests may run beside these


def test_a_bundle_with_its_image_serves_on_a_machine_that_never_saw_the_hub(
    hf_env: HubEmulation,
    docker_client: DockerClient,
    cpu_image: str,
    cli_env: dict[str, str],
    tmp_path: Path,
) -> None:
    connected = tmp_path / "connected-cache"
    pull(REPO, connected)  # the connected machine: the model from the hub
    tag = f"nimctl-bundle-test:{uuid.uuid4().hex[:12]}"
    docker_client.images.get(cpu_image).tag(tag)
    archive = tmp_path / "tiny-vlm.tar"
    air_gapped = Cli({**cli_env, "XDG_CACHE_HOME": str(tmp_path / "air-gapped")})
    try:
        started = time.monotonic()
        code, out, err = Cli(cli_env)(
            "bundle", "export", str(MANIFEST), "-o", str(archive), "--image", tag,
            "--cache", str(connected), "--format", "json",
        )  # fmt: skip
        assert code == 0, err
        exported = json.loads(out)
        export_s = time.monotonic() - started
        assert exported["image"] == tag and exported["size_bytes"] > 100e6  # the image is in

        docker_client.images.remove(tag)  # the air-gapped machine has no such image
        assert not image_exists(docker_client, tag)

        started = time.monotonic()
        code, out, err = air_gapped("bundle", "import", str(archive), "--format", "json")
        assert code == 0, err
        imported = json.loads(out)
        import_s = time.monotonic() - started
        assert imported["image_loaded"] and image_exists(docker_client, tag)
        cache = tmp_path / "air-gapped" / "nimctl"
        assert (
            require_cached(REPO, cache) == layout.repo_dir(cache, REPO) / "snapshots" / hf_env.tiny_vlm_main
        )
        print(
            f"\nbundle with image: export {export_s:.0f}s, import {import_s:.0f}s, {exported['size_bytes'] / 1e9:.2f} GB"
        )

        code, out, err = air_gapped(
            "run", imported["manifest"], "-d", "--runtime", "docker", "--name", NAME,
            "--port", str(free_port()), "--image", tag, "--timeout", RUN_TIMEOUT_S, "--offline",
        )  # fmt: skip
        assert code == 0, err
        assert "is ready at" in out
    finally:
        for container in docker_client.containers.list(all=True, filters={"name": NAME}):
            container.remove(force=True)
        if image_exists(docker_client, tag):
            docker_client.images.remove(tag)
        archive.unlink(missing_ok=True)
