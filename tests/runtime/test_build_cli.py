"""`nimctl build` through the CLI, on a stand-in daemon whose builder streams the classic format.

What a user sees (one line per phase and per finished step, the tail of the log and a hint on
failure, exit 9), that the connection is closed, and which images a rebuild discards: only
the deps image the replaced image stood on, never another tag's or the other device's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from nimctl import __version__
from nimctl.cli.main import app
from nimctl.errors import EXIT_RUNTIME_FAILED
from nimctl.runtime import docker_client
from nimctl.runtime.images import DEPS_LABEL, LOCAL_BASE_IMAGE
from tests.runtime.fake_docker import FakeDocker

IMAGE = f"nimctl/nim-cpu:{__version__}"


@pytest.fixture
def daemon(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeDocker]:
    monkeypatch.setenv("NIMCTL_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("NO_COLOR", "1")
    fake = FakeDocker()
    fake.images.add(LOCAL_BASE_IMAGE)
    clients: list[FakeDocker] = []

    def connect(timeout: float | None = None) -> FakeDocker:
        fake.closed = False
        clients.append(fake)
        return fake

    monkeypatch.setattr(docker_client, "connect", connect)
    yield fake
    assert clients and fake.closed, "nimctl build left its Docker connection open"


def wheelhouse(tmp_path: Path, *names: str) -> Path:
    folder = tmp_path / "-".join(names)
    folder.mkdir(exist_ok=True)
    for name in names:
        (folder / f"{name}-1.0-py3-none-any.whl").write_bytes(b"not really a wheel")
    return folder


def build(*argv: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, ["build", *argv])
    return result.exit_code, result.stdout, result.stderr


def test_build_shows_phases_and_steps(daemon: FakeDocker, tmp_path: Path) -> None:
    code, out, err = build("--wheelhouse", str(wheelhouse(tmp_path, "one")))
    assert code == 0, err
    lines = err.splitlines()
    deps = re.fullmatch(
        r"building (nimctl/nim-cpu-deps:[0-9a-f]{16}) \(OS and Python packages, 1 wheels, offline\)", lines[0]
    )
    assert deps, lines[0]
    # The classic builder counts the global ARG as step 1.
    assert re.fullmatch(r"  deps 1/(\d+) ARG BASE_IMAGE=debian:bookworm-slim  \(\d+s\)", lines[1]), lines[1]
    assert re.fullmatch(r"  deps 2/\d+ FROM \$\{BASE_IMAGE\} AS os  \(\d+s\)", lines[2]), lines[2]
    assert f"building {IMAGE} (manifests and nimctl's code)" in lines
    assert any(
        re.fullmatch(r"  app 2/\d+ COPY profiles/ /opt/nim/profiles/  \(cached\)", line) for line in lines
    )
    assert out.startswith(f"Built {IMAGE} (") and f"deps image {deps.group(1)} built" in out
    assert daemon.images.get(IMAGE).labels[DEPS_LABEL] == deps.group(1)
    # The builder was asked for an offline install, on the local base.
    first = daemon.api.builds[0]
    assert first["buildargs"] == {"BASE_IMAGE": LOCAL_BASE_IMAGE, "PIP_INDEX_ARGS": "--no-index"}

    code, out, err = build("--wheelhouse", str(wheelhouse(tmp_path, "one")))
    assert code == 0 and err.splitlines()[0] == f"reusing {deps.group(1)} (OS and Python packages unchanged)"


def test_a_rebuild_discards_only_the_deps_image_it_superseded(daemon: FakeDocker, tmp_path: Path) -> None:
    others = ["nimctl/nim-cpu-deps:0123456789abcdef", "nimctl/nim-cuda-deps:0123456789abcdef"]
    for other in others:  # another tag's deps image, and a GPU machine's CUDA one
        daemon.images.add(other)
    assert build("--wheelhouse", str(wheelhouse(tmp_path, "one")))[0] == 0
    old_deps = daemon.images.get(IMAGE).labels[DEPS_LABEL]
    assert build("--wheelhouse", str(wheelhouse(tmp_path, "one", "two")))[0] == 0
    new_deps = daemon.images.get(IMAGE).labels[DEPS_LABEL]
    assert new_deps != old_deps
    assert old_deps in daemon.images.removed
    tags = {tag for image in daemon.images.images for tag in image.tags}
    assert {new_deps, IMAGE, LOCAL_BASE_IMAGE, *others} <= tags


def test_a_deps_image_another_tag_stands_on_stays(daemon: FakeDocker, tmp_path: Path) -> None:
    one = str(wheelhouse(tmp_path, "one"))
    assert build("--wheelhouse", one)[0] == 0
    assert build("--wheelhouse", one, "--tag", "nimctl/nim-cpu:mine")[0] == 0
    old_deps = daemon.images.get(IMAGE).labels[DEPS_LABEL]
    assert build("--wheelhouse", str(wheelhouse(tmp_path, "one", "two")))[0] == 0
    assert old_deps not in daemon.images.removed  # nimctl/nim-cpu:mine is built on it


def test_a_failed_build_shows_the_log_tail_and_a_hint(daemon: FakeDocker, tmp_path: Path) -> None:
    daemon.api.fail_on = "RUN"
    code, out, err = build("--wheelhouse", str(wheelhouse(tmp_path, "one")))
    assert code == EXIT_RUNTIME_FAILED, err
    assert out == ""
    tail = err[err.index("Last lines of the build log:") :]
    assert "  | E: no such package: nimctl-test-missing" in tail
    assert "  | The command '/bin/sh -c set -eu;" in tail
    assert re.search(r"Error: image build failed at deps step \d+/\d+ \(RUN set -eu;", err), err
    log = Path(re.search(r"Hint: the full build log is (\S+)", err).group(1))  # type: ignore[union-attr]
    assert "E: no such package: nimctl-test-missing" in log.read_text()
