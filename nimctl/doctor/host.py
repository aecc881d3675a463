"""The host: disk free in the cache, ``/dev/shm``, the port, the clock."""

from __future__ import annotations

import os
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl.doctor.report import Check, Verdict
from nimctl.output import format_bytes

if TYPE_CHECKING:
    from nimctl.doctor.probes import DaemonState, Probes
    from nimctl.doctor.target import Target

# No machine running this nimctl can be earlier than its release: a clock before it is wrong, and
# TLS (the hub's certificates, an instance's own) fails with "certificate is not yet valid".
RELEASE_DATE = datetime(2026, 12, 1, tzinfo=UTC)
SKEW_WARN_S = 5.0
_UNITS = {"": 1, "b": 1, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str) -> int:
    """Docker's ``--shm-size`` spelling (``1g``, ``16g``, ``512m``) in bytes."""
    match = re.fullmatch(r"(\d+)([bkmgt]?)", text.strip().lower())
    if not match:
        raise ValueError(f"not a size: {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def _existing(path: Path) -> Path:
    """The folder itself, or its nearest ancestor that exists (where it would be made)."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def model_bytes(target: Target) -> tuple[int | None, str]:
    """Bytes the model still needs in the cache, and how that was found (None: not known)."""
    from nimctl.profiles.memory import WEIGHT_BYTES
    from nimctl.store import layout

    source = target.source
    assert source is not None
    if source.kind == "builtin":
        from nimctl.models.builtin import is_complete

        if is_complete(source.name, layout.builtin_dir(target.cache) / source.name):
            return 0, "already generated in the cache"
    elif source.kind == "hf":
        from nimctl.errors import ModelStoreError
        from nimctl.store.pull import require_cached

        try:
            require_cached(source.name, target.cache, revision=source.revision)
            return 0, "already in the cache"
        except ModelStoreError:
            pass
    if target.manifest is None:
        return None, "no manifest gives its size"
    precision = _precision(target) if target.spec is not None else None
    per_parameter = WEIGHT_BYTES.get(precision or "", 2)
    if source.kind == "hf":
        per_parameter = max(per_parameter, 2)  # hub checkpoints are bf16 even for an fp8 profile
    size = int(target.manifest.model.parameters * per_parameter)
    return size, f"about {format_bytes(size)} ({target.manifest.model.parameters:,} parameters)"


def _precision(target: Target) -> str | None:
    assert target.manifest is not None and target.spec is not None
    profile = target.manifest.profile_by_id_or_name(target.spec.profile_id or "")
    return profile.precision if profile else None


def disk_check(target: Target) -> Check:
    from nimctl.store.pull import DISK_MARGIN_BYTES

    title = "disk free in the cache"
    where = _existing(target.cache)
    free = shutil.disk_usage(where).free
    data: dict[str, Any] = {"cache": str(target.cache), "free_bytes": free, "needed_bytes": None}
    hint = "free space (nimctl cache prune, nimctl cache rm MODEL) or point --cache at a bigger disk"
    has = f"{target.cache} has {format_bytes(free)} free"
    if target.source is None:  # the machine only
        if free < DISK_MARGIN_BYTES:
            return Check(
                "disk", title, Verdict.fail, f"{has}: too little for any model", hint=hint, data=data
            )
        return Check("disk", title, Verdict.ok, has, data=data)
    if target.source.kind == "local":
        return Check(
            "disk", title, Verdict.ok, f"the model is read in place from {target.source.name}", data=data
        )
    needed, how = model_bytes(target)
    data["needed_bytes"] = needed
    if needed == 0:
        return Check("disk", title, Verdict.ok, f"{how}; {has}", data=data)
    if target.offline and target.source.kind == "hf":
        return Check(
            "disk",
            title,
            Verdict.fail,
            f"an offline run, and {target.source.uri} is not (wholly) in {target.cache}",
            hint=f"nimctl pull {target.source.uri} while online, or nimctl bundle import a bundle of it",
            data=data,
        )
    if needed is None:
        return Check("disk", title, Verdict.ok, f"{has}; the model's size is unknown ({how})", data=data)
    wanted = needed + DISK_MARGIN_BYTES
    if free < wanted:
        return Check(
            "disk",
            title,
            Verdict.fail,
            f"the model needs {how}, plus {format_bytes(DISK_MARGIN_BYTES)} to spare; {has}",
            hint=hint,
            data=data,
        )
    return Check("disk", title, Verdict.ok, f"the model needs {how}; {has}", data=data)


def shm_check(target: Target, probes: Probes) -> Check:
    title = "/dev/shm"
    path = probes.shm_path
    if target.spec is not None:
        wanted = target.spec.shm_size or "1g"
    elif target.request.model is None:
        wanted = "16g" if len(target.machine.gpus) > 1 else "1g"  # as run sizes it for this machine's GPUs
    else:
        return Check("shm", title, Verdict.skip, "no profile was chosen (see profile)")
    need = parse_size(wanted)
    data: dict[str, Any] = {"needed_bytes": need, "path": str(path)}
    if target.runtime == "docker":
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        data["memory_bytes"] = memory
        found = f"the container gets a /dev/shm of its own, --shm-size {wanted}"
        if memory < need:
            return Check(
                "shm",
                title,
                Verdict.warn,
                f"{found}, more than this machine's {format_bytes(memory)} of memory",
                hint="a /dev/shm is memory: add memory, or run a profile with fewer GPUs",
                data=data,
            )
        return Check("shm", title, Verdict.ok, found, data=data)
    try:
        stats = os.statvfs(path)
    except OSError as exc:
        return Check(
            "shm",
            title,
            Verdict.fail,
            f"{path} cannot be read: {exc.strerror}",
            hint="the engine's processes share memory through /dev/shm: mount a tmpfs there",
            data=data,
        )
    size, free = stats.f_blocks * stats.f_frsize, stats.f_bavail * stats.f_frsize
    data |= {"size_bytes": size, "free_bytes": free}
    has = f"{path} is {format_bytes(size)} ({format_bytes(free)} free); the run wants {wanted}"
    hint = f"enlarge it: sudo mount -o remount,size={wanted.upper()} {path}"
    if size < need:
        return Check("shm", title, Verdict.fail, has, hint=hint, data=data)
    if free < need:
        return Check(
            "shm", title, Verdict.warn, has, hint=f"free it (stale files in {path}), or {hint}", data=data
        )
    return Check("shm", title, Verdict.ok, has, data=data)


def port_check(target: Target) -> Check:
    from nimctl.errors import UsageError
    from nimctl.runtime.ports import port_free, suggest_port

    request = target.request
    title = "port"
    data: dict[str, Any] = {"host": request.host, "port": request.port}
    try:
        free = port_free(request.host, request.port)
    except UsageError as exc:
        return Check("port", title, Verdict.fail, exc.message, hint="pass another --host", data=data)
    if free:
        return Check("port", title, Verdict.ok, f"{request.host}:{request.port} is free", data=data)
    other = suggest_port(request.host, request.port)
    return Check(
        "port",
        title,
        Verdict.fail,
        f"{request.host}:{request.port} is in use (nimctl ps shows whether an instance holds it)",
        hint=f"pass --port {other}" if other else "pass another --port",
        data={**data, "suggested_port": other},
    )


def _daemon_time(text: str) -> datetime | None:
    """Docker's SystemTime (RFC 3339 with nanoseconds) as a datetime."""
    match = re.fullmatch(r"(.+?T\d\d:\d\d:\d\d)(?:\.(\d+))?(Z|[+-]\d\d:\d\d)", text.strip())
    if not match:
        return None
    fraction = (match.group(2) or "0")[:6].ljust(6, "0")
    zone = "+00:00" if match.group(3) == "Z" else match.group(3)
    try:
        return datetime.fromisoformat(f"{match.group(1)}.{fraction}{zone}")
    except ValueError:
        return None


def clock_check(probes: Probes, daemon: DaemonState) -> Check:
    title = "clock"
    now = probes.clock()
    data: dict[str, Any] = {"now": now.isoformat(), "daemon_skew_s": None}
    if now < RELEASE_DATE:
        return Check(
            "clock",
            title,
            Verdict.fail,
            f"it is {now:%Y-%m-%d %H:%M} UTC here, before nimctl's release ({RELEASE_DATE:%Y-%m-%d})",
            hint="set the clock (timedatectl set-ntp true, or date -s): TLS to the hub and to the "
            "instances fails with a wrong clock",
            data=data,
        )
    detail = f"{now:%Y-%m-%d %H:%M:%S} UTC"
    system_time = (daemon.info or {}).get("SystemTime")
    daemon_now = _daemon_time(system_time) if isinstance(system_time, str) else None
    if daemon_now is not None and daemon.asked_at is not None:
        skew = (daemon_now - daemon.asked_at).total_seconds()
        data["daemon_skew_s"] = round(skew, 3)
        if abs(skew) > SKEW_WARN_S:
            return Check(
                "clock",
                title,
                Verdict.warn,
                f"{detail}; the Docker daemon's clock is {abs(skew):.0f} s "
                + ("ahead" if skew > 0 else "behind"),
                hint="synchronise both clocks (NTP): logs and certificates disagree otherwise",
                data=data,
            )
        detail += f"; the Docker daemon agrees within {abs(skew):.1f} s"
    return Check("clock", title, Verdict.ok, detail, data=data)
