"""A build that fails, on a real daemon: the log's tail on screen, a hint naming the full log,
exit 9, and no image or build container left behind.

The Dockerfile is a tiny one on the local base image (no registry, no wheels), in a copy of the
source tree that `nimctl build` is pointed at with NIMCTL_SOURCE_DIR: a few seconds.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from typer.testing import CliRunner

from nimctl.cli.main import app
from nimctl.errors import EXIT_RUNTIME_FAILED
from tests.docker.conftest import ROOT

if TYPE_CHECKING:
    from docker import DockerClient

pytestmark = pytest.mark.docker

TAG = "nimctl-e2e/failing-build:0"
FAILING = """\
ARG BASE_IMAGE
FROM ${BASE_IMAGE} AS os
RUN echo "nimctl-e2e: about to fail" && exit 3
FROM os
RUN true
"""


def _source_with(dockerfile: str, target: Path) -> Path:
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    shutil.copy2(ROOT / "pyproject.toml", target / "pyproject.toml")
    shutil.copytree(ROOT / "nimctl", target / "nimctl", ignore=ignore)
    (target / "container").mkdir()
    shutil.copy2(ROOT / "container" / "os-packages.txt", target / "container" / "os-packages.txt")
    (target / "container" / "Dockerfile.cpu").write_text(dockerfile, encoding="utf-8")
    return target


def test_a_failing_build_shows_its_log_tail_and_exits_9(docker_client: DockerClient, tmp_path: Path) -> None:
    from nimctl.runtime.images import LOCAL_BASE_IMAGE, image_exists

    if not image_exists(docker_client, LOCAL_BASE_IMAGE):
        pytest.fail(f"no {LOCAL_BASE_IMAGE}: run scripts/build-images.sh --base-only first")
    source = _source_with(FAILING, tmp_path)
    before = {c.id for c in docker_client.containers.list(all=True)}
    env = {"NIMCTL_SOURCE_DIR": str(source), "NIMCTL_STATE_DIR": str(tmp_path / "state"), "NO_COLOR": "1"}
    result = CliRunner().invoke(app, ["build", "--base-image", LOCAL_BASE_IMAGE, "--tag", TAG], env=env)
    err = result.stderr
    assert result.exit_code == EXIT_RUNTIME_FAILED, err
    assert "Last lines of the build log:" in err and "  | nimctl-e2e: about to fail" in err
    assert re.search(
        r"Error: image build failed at deps step \d+/\d+ \(RUN echo .nimctl-e2e: about to fail", err
    ), err
    assert "returned a non-zero code: 3" in err
    log = re.search(r"Hint: the full build log is (\S+)", err)
    assert log and "nimctl-e2e: about to fail" in Path(log.group(1)).read_text()
    assert not image_exists(docker_client, TAG)
    assert {c.id for c in docker_client.containers.list(all=True)} == before, "a build container was left"
