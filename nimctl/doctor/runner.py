"""Run every check, in the issue's order, on the machine the probes describe."""

from __future__ import annotations

from collections.abc import Callable

from nimctl.doctor import docker, gpu, host, model
from nimctl.doctor.probes import DaemonState, Probes, ask_daemon
from nimctl.doctor.report import Check, Report, Verdict
from nimctl.doctor.target import Request, plan

# name -> title, for a check that could not run at all (a bug, or a machine nimctl cannot read).
TITLES = {
    "driver": "NVIDIA driver and CUDA",
    "toolkit": "NVIDIA container toolkit / CDI",
    "docker": "Docker daemon",
    "disk": "disk free in the cache",
    "shm": "/dev/shm",
    "port": "port",
    "profile": "runnable profile",
    "credentials": "credentials",
    "clock": "clock",
    "image": "image",
}


def run_doctor(request: Request, probes: Probes | None = None) -> Report:
    """The report for ``nimctl run`` with ``request`` on this machine (or the one ``probes`` make).

    A bad argument raises what ``nimctl run`` would raise (a UsageError); everything the machine
    lacks is a check's verdict instead.
    """
    probes = probes or Probes()
    daemon = (
        ask_daemon(probes)
        if request.runtime != "local"
        else DaemonState(probes.docker_host, error="not asked")
    )
    try:
        target = plan(request, probes, daemon)

        def driver() -> Check:
            # The image's CUDA is looked up (in the image, if present) only when a GPU run is judged.
            needs = target.device == "cuda" and bool(target.machine.gpus)
            cuda = docker.image_cuda(target, daemon) if needs else (None, "image")
            return gpu.driver_check(target, *cuda)

        steps: list[tuple[str, Callable[[], Check]]] = [
            ("driver", driver),
            ("toolkit", lambda: gpu.toolkit_check(target, daemon)),
            ("docker", lambda: docker.daemon_check(target, daemon)),
            ("disk", lambda: host.disk_check(target)),
            ("shm", lambda: host.shm_check(target, probes)),
            ("port", lambda: host.port_check(target)),
            ("profile", lambda: model.profile_check(target)),
            ("credentials", lambda: model.credentials_check(target, probes)),
            ("clock", lambda: host.clock_check(probes, daemon)),
            ("image", lambda: docker.image_check(target, daemon)),
        ]
        report = Report(request.model, target.runtime)
        report.checks = [_guarded(name, step) for name, step in steps]
        return report
    finally:
        daemon.close()


def _guarded(name: str, step: Callable[[], Check]) -> Check:
    """A check that breaks is reported as one that could not decide, not as doctor's own failure."""
    try:
        return step()
    except Exception as exc:  # one item's surprise must not hide the others
        return Check(
            name,
            TITLES[name],
            Verdict.warn,
            f"could not check: {type(exc).__name__}: {exc}",
            hint="a bug in nimctl doctor, or a machine it cannot read: please report it",
        )
