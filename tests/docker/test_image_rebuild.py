"""A change to nimctl's code rebuilds only the image's last layers.

The change is made in a copy of the source tree, so the checkout is never touched; the copy
has the same dependencies, so its deps image is the one the session built, reused by tag, and
the app build takes every layer before the code from Docker's cache.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from tests.docker.conftest import ROOT, WHEELHOUSE

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.docker

TAG = "nimctl/nim-cpu:e2e-rebuild"
MARKER = "# changed by tests/docker/test_image_rebuild.py"


def _copy_source(target: Path) -> None:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for name in ("pyproject.toml", "constraints.txt", "README.md"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, target / name)
    for name in ("nimctl", "container", "profiles"):
        shutil.copytree(ROOT / name, target / name, ignore=ignore, symlinks=True)
    shutil.rmtree(target / "container" / "context", ignore_errors=True)


def test_code_change_rebuilds_only_the_last_layers(
    docker_client: DockerClient, cpu_image: str, tmp_path: Path
) -> None:
    from nimctl.runtime.images import LOCAL_BASE_IMAGE, build_image

    source = tmp_path / "src"
    source.mkdir()
    _copy_source(source)
    changed = source / "nimctl" / "runtime" / "ports.py"
    changed.write_text(changed.read_text(encoding="utf-8") + f"\n{MARKER}\n", encoding="utf-8")
    try:
        result = build_image(
            docker_client,
            device="cpu",
            image=TAG,
            base_image=LOCAL_BASE_IMAGE,
            wheelhouse=WHEELHOUSE,
            source=source,
        )
        assert result.deps_reused, f"the deps image was rebuilt: {result.deps_image}"
        app_steps = [step for step in result.steps if step.phase == "app"]
        assert [step.phase for step in result.steps] == ["app"] * len(app_steps)
        by_instruction = {
            step.instruction.split()[0] + " " + step.instruction.split()[1]: step for step in app_steps
        }
        assert by_instruction["COPY profiles/"].cached, "unchanged manifests were copied again"
        assert not by_instruction["COPY src/nimctl/"].cached, "the changed code came from the cache"
        # The new code is what the image runs.
        output = docker_client.containers.run(
            TAG,
            entrypoint=["python3", "-c", "import nimctl.runtime.ports as p; print(open(p.__file__).read())"],
            remove=True,
        )
        assert MARKER in output.decode()
    finally:
        docker_client.images.remove(TAG, force=True)
