"""Building and finding nimctl's images through the Docker SDK, reporting progress as events.

The build goes through the daemon's classic builder (the SDK has no BuildKit). Its output
is parsed into steps (``Step 3/17 : COPY ...``, ``---> Using cache``) so that the CLI can
show the current step and the tests can check which layers came from the cache; every
line also goes to a log file whose tail is shown when the build fails.
"""

from __future__ import annotations

import contextlib
import re
import tempfile
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from nimctl import __version__
from nimctl.errors import RuntimeFailure, UsageError
from nimctl.runtime.context import Context, app_context, deps_context
from nimctl.runtime.paths import build_logs_dir
from nimctl.runtime.source import Device, source_dir

if TYPE_CHECKING:
    from docker import DockerClient

IMAGE_REPOS: dict[Device, str] = {"cpu": "nimctl/nim-cpu", "cuda": "nimctl/nim-cuda"}
# Made by scripts/build-images.sh from Debian packages, for machines without a registry.
LOCAL_BASE_IMAGE = "nimctl/base:bookworm"
# The official vLLM image of the release the CPU image runs (0.32.0): the front always starts the
# engine with --enable-scale-out, a 0.32 flag. Not pulled here (no registry). Recent releases'
# default tags are CUDA 13 builds (driver 580 or newer); on an older driver pass --base-image
# with that release's CUDA 12 tag.
CUDA_BASE_IMAGE = "vllm/vllm-openai:v0.32.0"
# The CUDA that image is built with (what `nimctl doctor` holds the driver to when the image is
# not here to say so itself through NVIDIA's CUDA_VERSION variable).
CUDA_BASE_IMAGE_CUDA = "13.0"
DEBIAN_BASE_IMAGE = "debian:bookworm-slim"
ONLINE_CPU_INDEX = "--extra-index-url https://download.pytorch.org/whl/cpu"
LOG_TAIL_LINES = 25
# Where scripts/build-images.sh keeps its wheelhouse (git-ignored), relative to the source tree.
DEFAULT_WHEELHOUSE = "container/context/wheels"

# On an app image: the deps image it was built on, so that a rebuild can tell which deps image
# it superseded (and discard that one only: other tags, a GPU machine's CUDA deps, stay).
DEPS_LABEL = "ai.nimctl.deps-image"
_PULL_FAILURES = ("pull access denied", "dial tcp", "no such host", "manifest unknown")
_STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)$")
_LAYER = re.compile(r"^ ---> ([0-9a-f]{12})$")


def default_image(device: Device) -> str:
    return f"{IMAGE_REPOS[device]}:{__version__}"


@dataclass
class BuildStep:
    phase: Literal["deps", "app"]
    number: int
    total: int
    instruction: str
    cached: bool = False
    image_id: str = ""  # the layer image the step produced


@dataclass(frozen=True)
class BuildEvent:
    """What a build reports while it runs.

    ``phase`` (a phase begins: building or reusing the deps image, building the app image),
    ``step`` (a step began), ``cached`` (it came from the cache), ``output`` (a line it
    printed), ``done``, or ``failed`` (then ``message`` holds the log's last lines).
    """

    kind: Literal["phase", "step", "cached", "output", "done", "failed"]
    message: str
    step: BuildStep | None = None
    elapsed: float = 0.0


BuildListener = Callable[[BuildEvent], None]


@dataclass
class BuildResult:
    image: str
    image_id: str
    base_image: str
    deps_image: str
    deps_reused: bool
    log_path: Path
    elapsed: float
    wheels: int
    steps: list[BuildStep] = field(default_factory=list)

    def cached(self, phase: Literal["deps", "app"]) -> list[bool]:
        return [step.cached for step in self.steps if step.phase == phase]

    def to_dict(self) -> dict[str, Any]:
        return {
            "image": self.image,
            "image_id": self.image_id,
            "base_image": self.base_image,
            "deps_image": self.deps_image,
            "deps_reused": self.deps_reused,
            "log": str(self.log_path),
            "elapsed_s": round(self.elapsed, 1),
            "steps": len(self.steps),
            "cached_steps": sum(step.cached for step in self.steps),
            "wheels": self.wheels,
        }


def image_exists(client: DockerClient, image: str) -> bool:
    from docker.errors import ImageNotFound

    try:
        client.images.get(image)
    except ImageNotFound:
        return False
    return True


def default_base_image(client: DockerClient, device: Device) -> str:
    """CUDA: the official vLLM image. CPU: the local Debian base when present, else Debian's."""
    if device == "cuda":
        return CUDA_BASE_IMAGE
    return LOCAL_BASE_IMAGE if image_exists(client, LOCAL_BASE_IMAGE) else DEBIAN_BASE_IMAGE


def _log_path(image: str) -> Path:
    folder = build_logs_dir()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / (re.sub(r"[^A-Za-z0-9_.-]+", "_", image) + ".log")


def build_image(
    client: DockerClient,
    *,
    device: Device,
    image: str | None = None,
    base_image: str | None = None,
    wheelhouse: Path | None = None,
    source: Path | None = None,
    no_cache: bool = False,
    on_event: BuildListener | None = None,
) -> BuildResult:
    """Build the ``device`` image and tag it ``image``: the deps image first unless it exists.

    A failure emits a ``failed`` event with the log's last lines, then raises :class:`RuntimeFailure`.
    """
    emit = on_event or (lambda _event: None)
    root = source_dir(source)
    image = image or default_image(device)
    base = base_image or default_base_image(client, device)
    if wheelhouse is not None:
        pip_index_args = "--no-index"
    elif device == "cpu":
        pip_index_args = ONLINE_CPU_INDEX
    else:
        pip_index_args = ""
    buildargs = {"BASE_IMAGE": base, "PIP_INDEX_ARGS": pip_index_args}
    log_path = _log_path(image)
    started = time.monotonic()
    deps = deps_context(root, device, wheelhouse)
    # The base's id, not its name: a rebuilt base (same tag) must rebuild the deps image.
    base_id = client.images.get(base).id if image_exists(client, base) else base
    deps_image = f"{IMAGE_REPOS[device]}-deps:{deps.digest(base_id, pip_index_args)[:16]}"
    deps_reused = not no_cache and image_exists(client, deps_image)
    steps: list[BuildStep] = []
    previous = client.images.get(image) if image_exists(client, image) else None
    labels = {"ai.nimctl.version": __version__, "ai.nimctl.device": device}
    with log_path.open("w", encoding="utf-8") as log:
        log.write(f"# nimctl build: {image} from {base} ({device}), source {root}\n")
        if deps_reused:
            emit(BuildEvent("phase", f"reusing {deps_image} (OS and Python packages unchanged)"))
            log.write(f"# reusing {deps_image}\n")
        else:
            wheels = f", {deps.wheels} wheels, offline" if wheelhouse is not None else ""
            emit(BuildEvent("phase", f"building {deps_image} (OS and Python packages{wheels})"))
            deps_steps = _run_build(
                client,
                deps,
                "deps",
                deps_image,
                buildargs,
                no_cache,
                log,
                log_path,
                started,
                emit,
                labels=labels,
            )
            steps += deps_steps
            _discard_stages(client, deps_steps)
        app = app_context(root, device, deps_image)
        emit(BuildEvent("phase", f"building {image} (manifests and nimctl's code)"))
        steps += _run_build(
            client,
            app,
            "app",
            image,
            {},
            no_cache,
            log,
            log_path,
            started,
            emit,
            labels={**labels, DEPS_LABEL: deps_image},
        )
    image_id = client.images.get(image).id
    if previous is not None and previous.id != image_id:
        _remove_quietly(client, previous.id)
        _discard_superseded_deps(client, (previous.labels or {}).get(DEPS_LABEL), deps_image)
    elapsed = time.monotonic() - started
    emit(BuildEvent("done", f"built {image} in {elapsed:.0f}s", elapsed=elapsed))
    return BuildResult(image, image_id, base, deps_image, deps_reused, log_path, elapsed, deps.wheels, steps)


def _run_build(
    client: DockerClient,
    context: Context,
    phase: Literal["deps", "app"],
    tag: str,
    buildargs: dict[str, str],
    no_cache: bool,
    log: Any,
    log_path: Path,
    started: float,
    emit: BuildListener,
    *,
    labels: dict[str, str],
) -> list[BuildStep]:
    from docker.errors import APIError

    steps: list[BuildStep] = []
    tail: deque[str] = deque(maxlen=LOG_TAIL_LINES)
    with tempfile.TemporaryDirectory(prefix="nimctl-build-") as tmp:
        tar_path = Path(tmp) / "context.tar"
        context.write(tar_path)
        try:
            with tar_path.open("rb") as tar:
                stream = client.api.build(
                    fileobj=tar,
                    custom_context=True,
                    tag=tag,
                    buildargs=buildargs,
                    rm=True,
                    forcerm=True,
                    nocache=no_cache,
                    decode=True,
                    labels=labels,
                    timeout=None,  # a step may print nothing for minutes: no read limit here
                )
                for chunk in stream:
                    if "error" in chunk:
                        message = str(chunk.get("errorDetail", {}).get("message") or chunk["error"]).strip()
                        log.write(f"ERROR: {message}\n")
                        tail.append(message)
                        raise _failure(message, steps, log_path, list(tail), emit)
                    text = chunk.get("stream")
                    if text:
                        log.write(text)
                        _parse(text, phase, steps, tail, started, emit)
        except APIError as exc:
            message = str(exc.explanation or exc)
            log.write(f"ERROR: {message}\n")
            raise _failure(message, steps, log_path, [*tail, message], emit) from None
    return steps


def _parse(
    text: str,
    phase: Literal["deps", "app"],
    steps: list[BuildStep],
    tail: deque[str],
    started: float,
    emit: BuildListener,
) -> None:
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line:
            continue
        tail.append(line)
        elapsed = time.monotonic() - started
        match = _STEP.match(line)
        if match:
            step = BuildStep(phase, int(match.group(1)), int(match.group(2)), match.group(3))
            steps.append(step)
            emit(BuildEvent("step", line, step, elapsed))
        elif line.strip() == "---> Using cache" and steps:
            steps[-1].cached = True
            emit(BuildEvent("cached", line, steps[-1], elapsed))
        elif (layer := _LAYER.match(raw.rstrip())) and steps:
            steps[-1].image_id = layer.group(1)
        else:
            emit(BuildEvent("output", line, steps[-1] if steps else None, elapsed))


def _remove_quietly(client: DockerClient, image: str) -> None:
    """Remove an image nimctl made and no longer needs; one still in use stays."""
    from docker.errors import APIError

    with contextlib.suppress(APIError):
        client.images.remove(image)


def _discard_stages(client: DockerClient, steps: list[BuildStep]) -> None:
    """After a deps build: its intermediate stages (the one holding the wheels is several GiB).
    Docker keeps stages as build cache, but the deps image is reused by tag, so that cache
    would only ever be read for an identical build."""
    stage_ends = [
        steps[i].image_id
        for i in range(len(steps) - 1)
        if steps[i + 1].instruction.upper().startswith("FROM ") and steps[i].image_id
    ]
    for stage in stage_ends:
        _remove_quietly(client, stage)


def _discard_superseded_deps(client: DockerClient, old_deps: str | None, deps_image: str) -> None:
    """The deps image the replaced app image was built on, once no image is built on it any more.

    Only that one: another tag's deps image (a test's, or the CUDA deps image on a GPU machine)
    is not this build's to remove, whatever its repository.
    """
    if not old_deps or old_deps == deps_image:
        return
    if client.images.list(filters={"label": f"{DEPS_LABEL}={old_deps}"}):
        return  # another app image still stands on it
    _remove_quietly(client, old_deps)


def _failure(
    message: str, steps: list[BuildStep], log_path: Path, tail: list[str], emit: BuildListener
) -> RuntimeFailure:
    emit(BuildEvent("failed", "\n".join(tail), steps[-1] if steps else None))
    first = message.splitlines()[0] if message else "unknown error"
    where = ""
    if steps:
        last = steps[-1]
        where = f" at {last.phase} step {last.number}/{last.total} ({last.instruction[:60]})"
    hint = f"the full build log is {log_path}"
    if any(marker in message for marker in _PULL_FAILURES):
        hint = (
            "the base image could not be pulled (no registry?): pass --base-image with one present here; "
            f"scripts/build-images.sh makes a CPU base from Debian packages (full log: {log_path})"
        )
    return RuntimeFailure(f"image build failed{where}: {first}", hint=hint)


def ensure_image(
    client: DockerClient,
    image: str,
    *,
    device: Device,
    on_event: BuildListener | None = None,
) -> BuildResult | None:
    """Build ``image`` when it is missing (None when it was there already).

    The wheelhouse scripts/build-images.sh keeps is used when it exists, so that a machine
    that built offline once rebuilds offline too.
    """
    if image_exists(client, image):
        if on_event is not None:
            on_event(BuildEvent("phase", f"image {image} is present"))
        return None
    if image != default_image(device):
        raise UsageError(
            f"image {image} not found",
            hint=f"build it, or leave --image out to use (and build) {default_image(device)}",
        )
    wheelhouse = source_dir() / DEFAULT_WHEELHOUSE
    offline = device == "cpu" and wheelhouse.is_dir() and any(wheelhouse.glob("*.whl"))
    return build_image(
        client, device=device, image=image, wheelhouse=wheelhouse if offline else None, on_event=on_event
    )
