"""The NVIDIA driver (and the CUDA version it supports) against the image's CUDA, and the NVIDIA
container toolkit (or CDI) that gives a container the GPUs."""

from __future__ import annotations

import shutil
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING

from nimctl.doctor.report import Check, Verdict

if TYPE_CHECKING:
    from nimctl.doctor.probes import DaemonState
    from nimctl.doctor.target import Target

# The oldest Linux driver of each CUDA major (NVIDIA's CUDA toolkit release notes).
MIN_DRIVER = {11: "450.80.02", 12: "525.60.13", 13: "580.65.06"}
CDI_DIRS = (Path("/etc/cdi"), Path("/var/run/cdi"))
TOOLKIT_HINT = (
    "install the NVIDIA Container Toolkit, then `sudo nvidia-ctk runtime configure --runtime=docker` and "
    "restart Docker (or generate CDI specs: `sudo nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml`)"
)


def version_tuple(text: str | None) -> tuple[int, ...] | None:
    if not text:
        return None
    try:
        return tuple(int(part) for part in text.split(".")[:2])
    except ValueError:
        return None


def engine_cuda() -> str | None:
    """The CUDA this environment's torch was built for (``2.9.0+cu128`` -> 12.8), without
    importing it (seconds); None when the version does not say."""
    try:
        version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        return None
    local = version.partition("+")[2]
    if local.startswith("cu") and local[2:].isdigit() and len(local) >= 5:
        digits = local[2:]
        return f"{int(digits[:-1])}.{digits[-1]}"
    return None


def driver_check(target: Target, image_cuda: str | None, image_cuda_from: str) -> Check:
    title = "NVIDIA driver and CUDA"
    machine = target.machine
    device = target.device
    driver, driver_cuda = machine.driver_version, machine.cuda_driver_version
    data = {"driver_version": driver, "driver_cuda": driver_cuda, "gpus": len(machine.gpus)}
    if device is None:
        return Check("driver", title, Verdict.skip, "no profile was chosen (see profile)", data=data)
    if device == "cpu":
        why = "the CPU image needs no driver" if target.runtime == "docker" else "the CPU engine needs none"
        if not machine.gpus:
            found = f"no GPU ({machine.reason or 'none visible'})"
        else:
            found = f"driver {driver} (CUDA {driver_cuda or '?'}), not used"
        profile = "this run is on the CPU" if target.request.model else "this machine runs on the CPU"
        return Check("driver", title, Verdict.skip, f"{found}: {profile}; {why}", data=data)
    if not machine.gpus:
        assumed = " (profiles judged on --assume-gpus)" if target.inventory.source == "assumed" else ""
        return Check(
            "driver",
            title,
            Verdict.fail,
            f"the run needs GPUs{assumed}, but NVML finds none: {machine.reason or 'none visible'}",
            hint="install the NVIDIA driver (nvidia-smi must list the GPUs), or run a CPU profile "
            "(nimctl profiles list MODEL)",
            data=data,
        )
    data |= {"image_cuda": image_cuda, "image_cuda_from": image_cuda_from}
    if image_cuda is None and "+cpu" in image_cuda_from:
        return Check(
            "driver",
            title,
            Verdict.fail,
            f"the run needs GPUs, and the {image_cuda_from} is a CPU build: a host process cannot use them",
            hint="install a CUDA build of vLLM and torch here, or run in Docker (--runtime docker)",
            data=data,
        )
    have, need = version_tuple(driver_cuda), version_tuple(image_cuda)
    found = f"driver {driver} supports CUDA {driver_cuda or '?'}"
    if have is None or need is None:
        return Check(
            "driver", title, Verdict.ok, f"{found}; the {image_cuda_from}'s CUDA is unknown", data=data
        )
    against = f"the {image_cuda_from} needs CUDA {image_cuda}"
    if have[0] < need[0]:
        minimum = MIN_DRIVER.get(need[0])
        return Check(
            "driver",
            title,
            Verdict.fail,
            f"{found}; {against}",
            hint=(
                f"upgrade the NVIDIA driver to {minimum} or newer" if minimum else "upgrade the NVIDIA driver"
            )
            + f", or build the image on a CUDA {have[0]} base: nimctl build --device cuda --base-image "
            f"vllm/vllm-openai:<the release's CUDA {have[0]} tag>",
            data=data,
        )
    if have < need:
        return Check(
            "driver",
            title,
            Verdict.warn,
            f"{found}; {against}: it runs only through CUDA's minor-version compatibility",
            hint=f"upgrade the NVIDIA driver to one for CUDA {image_cuda} if kernels fail to load",
            data=data,
        )
    return Check("driver", title, Verdict.ok, f"{found}; {against}", data=data)


def _cdi_devices(dirs: list[Path]) -> list[Path]:
    """The CDI spec files in ``dirs`` that name NVIDIA GPUs (``kind: nvidia.com/gpu``)."""
    found = []
    for folder in dirs:
        if not folder.is_dir():
            continue
        for path in sorted([*folder.glob("*.yaml"), *folder.glob("*.yml"), *folder.glob("*.json")]):
            try:
                if "nvidia.com/gpu" in path.read_text(encoding="utf-8", errors="replace"):
                    found.append(path)
            except OSError:
                continue
    return found


def toolkit_check(target: Target, daemon: DaemonState) -> Check:
    title = "NVIDIA container toolkit / CDI"
    if target.runtime != "docker":
        return Check("toolkit", title, Verdict.skip, "a host process needs no container toolkit")
    if target.device != "cuda":
        what = "no profile was chosen" if target.device is None else "the CPU image needs no GPU access"
        return Check("toolkit", title, Verdict.skip, what)
    if not daemon.answers:
        return Check("toolkit", title, Verdict.skip, "the Docker daemon does not answer (see docker)")
    info = daemon.info or {}
    runtimes = sorted((info.get("Runtimes") or {}).keys())
    data: dict[str, object] = {"runtimes": runtimes}
    if "nvidia" in runtimes:
        return Check("toolkit", title, Verdict.ok, "Docker has the nvidia runtime registered", data=data)
    spec_dirs = [Path(d) for d in info.get("CDISpecDirs") or []] or list(CDI_DIRS)
    specs = _cdi_devices(spec_dirs)
    data["cdi_specs"] = [str(p) for p in specs]
    if specs:
        return Check("toolkit", title, Verdict.ok, f"CDI specs name nvidia.com/gpu: {specs[0]}", data=data)
    # Docker's --gpus needs only the toolkit's hook on the daemon's PATH (a local daemon: ours).
    hook = shutil.which("nvidia-container-runtime-hook")
    if hook and daemon.address.startswith("unix://"):
        data["hook"] = hook
        return Check("toolkit", title, Verdict.ok, f"the toolkit's hook is installed: {hook}", data=data)
    return Check(
        "toolkit",
        title,
        Verdict.fail,
        f"Docker cannot give a container GPUs: runtimes {', '.join(runtimes) or 'none'}, no CDI spec for "
        "nvidia.com/gpu, no nvidia-container-runtime-hook",
        hint=TOOLKIT_HINT,
        data=data,
    )
