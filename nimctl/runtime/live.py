"""Each running instance's live figures, read from its own endpoints in parallel with a deadline.

``ps`` and ``top`` ask every running instance at once (one thread each): its ready endpoint and
its ``/v1/metrics``, with the instance's own key and CA. NVML is read at the same time in one
more thread. What has not answered by the deadline is reported as such (``live_error``); the
threads are daemons, so a server that never answers can delay nothing, not even the exit.

One read is a :class:`Sample`; ``top`` compares two (:func:`interval`) for the figures of the
last interval: TTFT and ITL from the histograms' growth, tokens/s from the counters'.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nimctl.runtime.instances import LIVE_ERROR_NOT_RUNNING, READY_PATH, Instance, LiveFigures

if TYPE_CHECKING:
    from nimctl.client.metrics import ParsedMetrics
    from nimctl.gpu.readings import Readings

# ps: how long the whole read may take. An instance answers in a few ms; one that has not by
# then is busy beyond use or hung, and ps must not wait for it.
PS_DEADLINE_S = 0.3
METRICS_PATH = "/v1/metrics"


@dataclass
class InstanceSample:
    """What one instance answered; ``error`` says why ``metrics`` is missing."""

    name: str
    taken_at: float  # time.monotonic()
    ready: bool | None = None
    metrics: ParsedMetrics | None = None
    error: str | None = None


@dataclass
class Sample:
    taken_at: float
    instances: dict[str, InstanceSample] = field(default_factory=dict)
    readings: Readings | None = None  # None: NVML did not answer by the deadline
    # Host pids of each instance's processes, read only when a GPU has processes to match.
    pids: dict[str, set[int]] = field(default_factory=dict)


def sample(instances: list[Instance], *, deadline: float = PS_DEADLINE_S, gpus: bool = True) -> Sample:
    """Ask every running instance with a URL (and NVML, unless ``gpus`` is False) at once."""
    asked = [instance for instance in instances if instance.running and instance.url]
    if asked:
        # Imported before the clock starts: ~0.1 s of CPU the first time, which is not the
        # instances' to answer for (on a busy machine it would eat the whole deadline).
        import nimctl._httpx
        import nimctl.client.metrics
        import nimctl.runtime.credentials

        nimctl.client.metrics.parser()
    if gpus:
        with contextlib.suppress(ImportError):
            import pynvml  # noqa: F401
    started = time.monotonic()
    end = started + deadline
    result = Sample(taken_at=started)
    threads = [
        threading.Thread(target=_ask_into, args=(result, instance, end), daemon=True) for instance in asked
    ]
    # One NVML read at a time: a driver that hangs (a GPU fallen off the bus) keeps its read, and
    # top's later frames show no GPU figures instead of starting a thread each that hangs too.
    if gpus and _GPU_READ.acquire(blocking=False):
        threads.append(threading.Thread(target=_read_gpus_into, args=(result, asked), daemon=True))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(max(0.0, end - time.monotonic()))
    for instance in asked:  # a thread still asking: its answer, if it comes, is not waited for
        result.instances.setdefault(instance.name, InstanceSample(instance.name, started, error="timeout"))
    return result


def fill_live(instances: list[Instance], *, deadline: float = PS_DEADLINE_S) -> Sample:
    """Set each instance's ``ready`` and ``live`` from one :func:`sample` (ps)."""
    running = any(instance.running for instance in instances)
    taken = sample(instances, deadline=deadline, gpus=running and nvidia_driver_present())
    for instance in instances:
        instance.live = figures(instance, taken)
        answered = taken.instances.get(instance.name)
        if answered is not None:
            instance.ready = answered.ready
    return taken


def figures(instance: Instance, taken: Sample) -> LiveFigures:
    """The ps figures of one instance from a sample."""
    if not instance.running:
        return LiveFigures(idle_stop_s=_round(instance.idle_stop), live_error=LIVE_ERROR_NOT_RUNNING)
    answered = taken.instances.get(instance.name)
    gpu_memory = None
    if taken.readings is not None and taken.readings.gpus:
        gpu_memory = taken.readings.memory_of(taken.pids.get(instance.name, set()))
    if answered is None or answered.metrics is None:
        error = "no URL" if not instance.url else (answered.error if answered else "timeout")
        # The configured idle stop is known from the label or record even when the server is silent.
        return LiveFigures(idle_stop_s=_round(instance.idle_stop), gpu_memory=gpu_memory, live_error=error)
    from nimctl.client.metrics import summarize

    summary = summarize(answered.metrics)
    idle_stop_in = None
    if summary.idle_s is not None and summary.idle_stop_s is not None:
        idle_stop_in = max(0.0, summary.idle_stop_s - summary.idle_s)
    return LiveFigures(
        idle_s=_round(summary.idle_s),
        idle_stop_s=_round(summary.idle_stop_s if summary.idle_stop_s is not None else instance.idle_stop),
        idle_stop_in_s=_round(idle_stop_in),
        kv_cache_usage_pct=None if summary.kv_cache_usage is None else round(summary.kv_cache_usage * 100, 1),
        requests_running=_count(summary.requests_running),
        requests_waiting=_count(summary.requests_waiting),
        prompt_tokens_per_s=_round(summary.prompt_tokens_per_s, 1),
        generation_tokens_per_s=_round(summary.generation_tokens_per_s, 1),
        gpu_memory=gpu_memory,
        live_error=None,
    )


# Where an NVIDIA driver shows itself: Linux's device and proc entries, WSL's GPU device.
DRIVER_MARKERS = ("/dev/nvidiactl", "/proc/driver/nvidia", "/dev/dxg")


def nvidia_driver_present(markers: tuple[str, ...] = DRIVER_MARKERS) -> bool:
    """Whether NVML may have GPUs to tell of. ps asks this first: on a machine without a driver,
    loading NVML only to hear so costs ~50 ms (the nimctl.gpu package, pynvml, a failed dlopen)."""
    return any(os.path.exists(marker) for marker in markers)


@dataclass(frozen=True)
class Interval:
    """What happened between two samples of one instance (None: no request finished a token in it)."""

    seconds: float
    ttft_s: float | None
    itl_s: float | None
    prompt_tokens_per_s: float | None
    generation_tokens_per_s: float | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "interval_s": round(self.seconds, 2),
            "ttft_s": _round(self.ttft_s, 4),
            "itl_s": _round(self.itl_s, 4),
            "prompt_tokens_per_s": _round(self.prompt_tokens_per_s, 1),
            "generation_tokens_per_s": _round(self.generation_tokens_per_s, 1),
        }


def interval(before: InstanceSample | None, after: InstanceSample | None) -> Interval | None:
    """The figures of the interval between two samples; None without both sets of metrics."""
    if before is None or after is None or before.metrics is None or after.metrics is None:
        return None
    from nimctl.client.metrics import GENERATION_TOKENS, PROMPT_TOKENS, TTFT, itl_histogram

    seconds = after.taken_at - before.taken_at
    if seconds <= 0:
        return None

    def mean_of(new: Any, old: Any) -> float | None:
        grown = None if new is None else new.since(old)
        return grown.sum / grown.count if grown is not None and grown.count > 0 else None

    def rate(name: str) -> float | None:
        new, old = after.metrics.total(name), before.metrics.total(name)  # type: ignore[union-attr]
        if new is None or old is None or new < old:  # absent, or the engine restarted
            return None
        return (new - old) / seconds

    return Interval(
        seconds=seconds,
        ttft_s=mean_of(after.metrics.histograms.get(TTFT), before.metrics.histograms.get(TTFT)),
        itl_s=mean_of(itl_histogram(after.metrics), itl_histogram(before.metrics)),
        prompt_tokens_per_s=rate(PROMPT_TOKENS),
        generation_tokens_per_s=rate(GENERATION_TOKENS),
    )


HISTORY_S = 60


@dataclass
class FrameRow:
    instance: Instance
    live: LiveFigures
    interval: Interval | None
    generation_history: list[float | None]
    kv_history: list[float | None]

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.instance.to_dict(),
            "interval": None if self.interval is None else self.interval.to_dict(),
        }


@dataclass
class Frame:
    """What ``top`` shows at one moment."""

    wall_time: float
    name: str | None  # the one instance asked for; None: all
    rows: list[FrameRow]
    readings: Readings | None
    note: str | None = None
    history_s: int = HISTORY_S

    def to_dict(self) -> dict[str, Any]:
        readings = self.readings
        return {
            "time": self.wall_time,
            "instances": [row.to_dict() for row in self.rows],
            "gpus": None if readings is None else [gpu.to_dict() for gpu in readings.gpus],
            "gpus_reason": None if readings is None else readings.reason,
        }


class Watch:
    """Successive samples of the running instances (all, or the one named), and their history:
    each :meth:`step` lists the instances again (one started or stopped meanwhile shows up),
    reads them and compares each with its previous read."""

    def __init__(self, name: str | None = None, *, history_s: int = HISTORY_S) -> None:
        self.name = name
        self.history_s = history_s
        self.last: Sample | None = None
        self._history: dict[str, tuple[deque[float | None], deque[float | None]]] = {}

    def step(self, deadline: float) -> Frame:
        from nimctl.runtime.manage import list_instances

        instances, note = list_instances(readiness=False)
        if self.name is not None:
            instances = [instance for instance in instances if instance.name == self.name]
        taken = sample(instances, deadline=deadline)
        rows = []
        for instance in instances:
            live = figures(instance, taken)
            answered = taken.instances.get(instance.name)
            instance.ready = answered.ready if answered is not None else None
            instance.live = live
            before = self.last.instances.get(instance.name) if self.last is not None else None
            grown = interval(before, answered)
            generation, kv = self._history.setdefault(
                instance.name,
                (deque(maxlen=self.history_s), deque(maxlen=self.history_s)),
            )
            generation.append(grown.generation_tokens_per_s if grown else None)
            kv.append(live.kv_cache_usage_pct)
            rows.append(FrameRow(instance, live, grown, list(generation), list(kv)))
        self.last = taken
        return Frame(time.time(), self.name, rows, taken.readings, note, self.history_s)


def _ask_into(result: Sample, instance: Instance, end: float) -> None:
    result.instances[instance.name] = ask(instance, end)


def ask(instance: Instance, end: float) -> InstanceSample:
    """Ready and metrics of one instance, each request given what is left until ``end``."""
    import ssl

    from nimctl._httpx import httpx
    from nimctl.client.metrics import SUMMARY_FAMILIES, SUMMARY_QUERY, parse_metrics
    from nimctl.errors import NimctlError
    from nimctl.runtime.credentials import load

    answered = InstanceSample(instance.name, time.monotonic())

    def left() -> float:
        return max(0.01, end - time.monotonic())

    try:
        headers, verify = _credentials(instance, load)
        with httpx.Client(base_url=instance.url, headers=headers, verify=verify) as client:
            answered.ready = client.get(READY_PATH, timeout=left()).status_code == 200
            response = client.get(METRICS_PATH, params=SUMMARY_QUERY, timeout=left())
            answered.taken_at = time.monotonic()
            if response.status_code in (401, 403):
                answered.error = "unauthorized"
            elif response.status_code != 200:
                answered.error = f"HTTP {response.status_code}"
            else:
                answered.metrics = parse_metrics(response.text, SUMMARY_FAMILIES)
    except httpx.TimeoutException:
        answered.error = "timeout"
    except httpx.ConnectError as exc:
        answered.error = "tls error" if "SSL" in str(exc) or "certificate" in str(exc) else "unreachable"
    except httpx.HTTPError as exc:
        answered.error = type(exc).__name__
    except NimctlError:
        answered.error = "unreadable metrics"
    except ssl.SSLError:  # the instance's own CA or client certificate could not be loaded
        answered.error = "tls error"
    except (OSError, ValueError) as exc:  # its key or certificate files: unreadable, or malformed
        answered.error = type(exc).__name__
    return answered


def _credentials(instance: Instance, load: Any) -> tuple[dict[str, str], Any]:
    """The instance's key as a header, and how to check its certificate."""
    found = load(instance.name)
    headers = {}
    if found is not None and (key := found.api_key()):
        headers["Authorization"] = f"Bearer {key}"
    # Plain http has no certificate to check, and building httpx's default TLS context costs
    # ~50 ms of CPU per client; https uses the instance's own CA (or the system's).
    verify: Any = False
    if instance.url.startswith("https:"):
        verify = (found.ssl_context() if found is not None else None) or True
    return headers, verify


_GPU_READ = threading.Lock()


def _read_gpus_into(result: Sample, instances: list[Instance]) -> None:
    """NVML's readings into ``result``; holds :data:`_GPU_READ`, which :func:`sample` took for it."""
    try:
        from nimctl.gpu.readings import read_readings

        readings = read_readings()
        on_gpus = {process.pid for gpu in readings.gpus for process in gpu.processes}
        if on_gpus:
            result.pids = {instance.name: instance_pids(instance, on_gpus) for instance in instances}
        result.readings = readings
    finally:
        _GPU_READ.release()


def instance_pids(instance: Instance, candidates: set[int]) -> set[int]:
    """Which of ``candidates`` (host pids holding GPU memory) are the instance's: for a local
    instance, those in its process tree (launcher, front, engine and the engine's workers); for
    a container, those whose cgroup names it."""
    if instance.runtime == "local":
        from nimctl.runtime.processes import process_tree

        try:
            return candidates & {proc.pid for proc in process_tree(int(instance.ident))}
        except ValueError:
            return set()
    return {pid for pid in candidates if in_container(pid, instance.ident)}


_CONTAINER_ID = re.compile(r"[0-9a-f]{64}")


def in_container(pid: int, container_id: str, proc: Path = Path("/proc")) -> bool:
    """Whether the process's cgroup names the container (``docker-<id>.scope`` under systemd,
    ``/docker/<id>`` under cgroupfs; cgroup v1 and v2 alike): no daemon call needed.
    ``container_id`` may be the short id ps shows."""
    if not container_id:
        return False
    try:
        text = (proc / str(pid) / "cgroup").read_text()
    except OSError:
        return False
    return any(found.startswith(container_id) for found in _CONTAINER_ID.findall(text))


def _round(value: float | None, digits: int = 0) -> float | None:
    if value is None:
        return None
    return round(value, digits) if digits else float(round(value))


def _count(value: float | None) -> int | None:
    return None if value is None else int(value)
