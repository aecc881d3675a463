"""``nimctl bench MODEL --profiles all|ID,ID``: each runnable profile started in turn, benched with
one workload, and stopped, so that profile choice is a measurement rather than a rule.

:func:`plan_profiles` reads ``--profiles`` against the model's manifest and this machine (as
``nimctl profiles list`` classifies it); :func:`sweep_profiles` runs them, one instance at a time,
each started as ``nimctl run`` would start it with that profile pinned (an API key of its own, a
free port, a name of the sweep's own so that the user's ``nimctl-MODEL`` is never touched). Every
profile gets the same prompts: a workload without a seed gets one seed for the whole sweep.

Every instance started is stopped, whatever happens:

- a start that fails or times out, or a sweep that cannot begin (an unreachable server, prompts
  too long for the context), is that profile's :attr:`ProfileRun.error`, and the next one goes on;
- a sweep in which every request of a level failed keeps its result, its failure copied to
  ``error``, and the next one goes on;
- Ctrl-C (or SIGTERM / SIGHUP, which would otherwise leave a local instance running: it is in a
  session of its own) stops the running instance and ends the whole sweep: nothing is raised,
  :attr:`ProfileSweep.interrupted` is set and the runs so far are returned, the one cut short
  included with what it measured. While an instance is being stopped further signals are only
  noted, so that nothing cuts the stop short.

LoRA profiles are left out of ``all`` and refused by name: without adapters (which a sweep does
not give) nim-serve runs one as the plain engine, so its figures would only repeat another's.
"""

from __future__ import annotations

import contextlib
import dataclasses
import secrets
import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import TYPE_CHECKING, Any

from nimctl import contract
from nimctl.errors import NimctlError, ProfileError, UsageError
from nimctl.runtime.signals import handling

if TYPE_CHECKING:
    from pathlib import Path

    from nimctl.bench.events import OnEvent
    from nimctl.bench.slo import Slo
    from nimctl.bench.sweep import SweepResult
    from nimctl.bench.workload import Workload
    from nimctl.profiles import Manifest, Profile
    from nimctl.profiles.classify import Classified
    from nimctl.runtime.manage import Choice, Started
    from nimctl.runtime.readiness import ReadinessEvent
    from nimctl.runtime.spec import RunSpec

RUNTIMES = ("auto", "docker", "local")
ALL = "all"
DEFAULT_TIMEOUT_S = 900.0
# Signals that end the sweep as Ctrl-C does, raising KeyboardInterrupt so that one path stops the
# instance. SIGINT itself keeps Python's default handler during a sweep: only with it does
# asyncio.run turn Ctrl-C into a cancel that keeps the figures. While an instance is being stopped,
# every one of _STOP_SIGNALS is only noted, so that nothing cuts the stop short.
_TERMINATE_SIGNALS = (signal.SIGTERM, signal.SIGHUP)
_STOP_SIGNALS = (signal.SIGINT, *_TERMINATE_SIGNALS)
# A failed start's last log lines, kept in the run: the instance (and its log) is removed with it.
_LOG_TAIL_LINES = 30

OnStatus = Callable[[str], None]


@dataclass
class ProfileRun:
    profile_id: str
    profile_name: str
    result: SweepResult | None = None
    # Why this profile has no complete result: a failed start, a sweep that could not begin, the
    # sweep's own failure (also in result.failure), "interrupted", or a stop that failed.
    error: str | None = None
    started_s: float | None = None  # seconds from start to ready
    instance: str | None = None  # the instance's name while it ran
    url: str | None = None
    engine_args: list[str] = field(default_factory=list)  # the profile's, from the manifest
    server_version: str | None = None  # /v1/version's release, read while it ran
    log_tail: list[str] = field(default_factory=list)  # the last log lines of a start that failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "profile": {"id": self.profile_id, "name": self.profile_name},
            "instance": self.instance,
            "url": self.url,
            "engine_args": list(self.engine_args),
            "server_version": self.server_version,
            "started_s": self.started_s,
            "error": self.error,
            "log_tail": list(self.log_tail),
            "results": None if self.result is None else self.result.to_dict(),
        }


@dataclass
class ProfileSweep:
    model: str
    runs: list[ProfileRun] = field(default_factory=list)
    note: str | None = None  # e.g. "only one profile can run on this machine: NAME"
    runtime: str | None = None  # the runtime the instances ran in (auto resolved)
    interrupted: bool = False  # stopped by Ctrl-C (or SIGTERM/SIGHUP): the runs are those so far

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "runtime": self.runtime,
            "note": self.note,
            "interrupted": self.interrupted,
            "runs": [run.to_dict() for run in self.runs],
        }


# -- which profiles -------------------------------------------------------------------------------


def plan_profiles(
    model: str, which: str, *, runtime: str = "auto"
) -> tuple[list[tuple[str, str]], str | None]:
    """The ``(id, name)`` of each profile ``which`` names, in the order to run them, and a note.

    ``which`` is ``all`` (every runnable profile but the LoRA ones, in the order the automatic
    choice ranks them) or a comma-separated list of ids, unique id prefixes (6+ hex digits) or
    names, run in the order given. An unknown or repeated one, or a LoRA profile, is a
    :class:`UsageError`; one that cannot run here a :class:`ProfileError` with the reason; the
    hint lists the runnable ones. Nothing is started.
    """
    if runtime not in RUNTIMES:
        raise UsageError(f"bad --runtime {runtime!r}: use auto, docker or local")
    manifest = _manifest(model)
    ranked = _ranked(manifest)
    runnable = [item for item in ranked if item.runnable and not item.profile.lora]
    runnable_text = ", ".join(f"{c.profile.name} ({c.profile.id[:12]})" for c in runnable) or "none"
    refs = [ref.strip() for ref in which.split(",")]
    if not which.strip() or any(not ref for ref in refs):
        raise UsageError(
            f"bad --profiles {which!r}: give 'all' or profile ids or names separated by commas",
            hint=f"runnable here: {runnable_text}",
        )
    if len(refs) == 1 and refs[0].lower() == ALL:
        if not runnable:
            raise _nothing_runnable(manifest, ranked)
        chosen = [item.profile for item in runnable]
    elif any(ref.lower() == ALL for ref in refs):
        raise UsageError("--profiles all runs every runnable profile: list no others with it")
    else:
        chosen = []
        for ref in refs:
            profile = _named(manifest, ranked, ref, runnable_text)
            if any(profile.id == other.id for other in chosen):
                raise UsageError(
                    f"--profiles names {profile.name} ({profile.id[:12]}) twice",
                    hint="list each profile once",
                )
            chosen.append(profile)
    note = None
    if len(runnable) == 1:
        only = runnable[0].profile
        note = f"only one profile can run on this machine: {only.name} ({only.id[:12]})"
    return [(profile.id, profile.name) for profile in chosen], note


def _named(manifest: Manifest, ranked: list[Classified], ref: str, runnable_text: str) -> Profile:
    """The profile ``ref`` names, if a sweep can run it."""
    profile = manifest.profile_by_id_or_name(ref)
    if profile is None:
        raise UsageError(
            f"no profile {ref!r} in the {manifest.name} manifest",
            hint=f"runnable here: {runnable_text}; `nimctl profiles list {manifest.name}` shows all",
        )
    item = next(c for c in ranked if c.profile.id == profile.id)
    if not item.runnable:
        raise ProfileError(
            f"profile {profile.name} ({profile.id[:12]}) cannot run here: {item.reason}",
            hint=f"runnable here: {runnable_text}" + (f"; or {item.fix}" if item.fix else ""),
        )
    if profile.lora:
        raise UsageError(
            f"profile {profile.name} ({profile.id[:12]}) is a LoRA profile: without adapters it runs as "
            "the plain engine, so a profile sweep leaves it out",
            hint=f"bench it on its own: nimctl run {manifest.name} --profile {profile.id[:12]} --lora-dir "
            f"DIR -d, then nimctl bench NAME; runnable here: {runnable_text}",
        )
    return profile


def _manifest(model: str) -> Manifest:
    # Resolved as `nimctl run` resolves it, so the profiles are the ones plan_run will pin.
    from nimctl.runtime.spec import resolve_model

    manifest = resolve_model(model).manifest
    if manifest is None:
        raise UsageError(
            f"{model} has no manifest, so no profiles to compare",
            hint=f"bench it without --profiles: nimctl run {model} -d, then nimctl bench NAME",
        )
    return manifest


def _ranked(manifest: Manifest) -> list[Classified]:
    # The inventory plan_run judges by: $NIMCTL_ASSUME_GPUS, else this machine's GPUs.
    from nimctl.gpu import detect_inventory
    from nimctl.profiles.classify import classify
    from nimctl.profiles.selection import rank

    inventory = detect_inventory()
    return rank(classify(manifest, inventory), inventory, "throughput")


def _nothing_runnable(manifest: Manifest, ranked: list[Classified]) -> ProfileError:
    from nimctl.gpu import detect_inventory
    from nimctl.profiles.selection import choose

    try:  # the selection's own error: it names the closest profiles and what would run them
        choose(manifest, detect_inventory(), ranked)
    except ProfileError as exc:
        return exc
    return ProfileError(f"no runnable profile for {manifest.name} without LoRA")


# -- running them ---------------------------------------------------------------------------------


def sweep_profiles(
    model: str,
    profiles: list[tuple[str, str]],
    workload: Workload,
    *,
    runtime: str = "auto",
    slo: Slo | None = None,
    on_event: OnEvent | None = None,
    on_status: OnStatus | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    cache_dir: Path | None = None,
    note: str | None = None,
) -> ProfileSweep:
    """Start, wait for, bench and stop each of ``profiles`` (from :func:`plan_profiles`) in turn.

    ``on_event`` gets each sweep's events (:mod:`nimctl.bench.events`), ``on_status`` one line per
    step ("NAME [ID]: starting (local)", "ready after 12 s", "stopping", "stopped"). ``note`` (from
    :func:`plan_profiles`) is carried into the result. See the module's docstring for failures and
    interruptions: nothing started outlives this call, and a KeyboardInterrupt is not raised.
    """
    from nimctl.runtime.manage import choose_runtime

    if runtime not in RUNTIMES:
        raise UsageError(f"bad --runtime {runtime!r}: use auto, docker or local")
    if timeout_s <= 0:
        raise UsageError("the start-up timeout must be positive")
    status: OnStatus = on_status or (lambda line: None)
    manifest = _manifest(model)
    choice = choose_runtime(runtime)  # type: ignore[arg-type]
    if workload.seed is None:
        # One seed for every profile: each instance starts with an empty prefix cache, so the
        # same prompts are the fairest comparison (the seed is in each result).
        workload = dataclasses.replace(workload, seed=secrets.randbelow(2**31))
    sweep = ProfileSweep(model, note=note, runtime=choice.runtime)
    if choice.note:
        status(choice.note)
    context = _Context(model, manifest, choice, workload, slo, on_event, status, timeout_s, cache_dir)
    with handling(_TERMINATE_SIGNALS, _interrupt):
        for profile_id, profile_name in profiles:
            run = ProfileRun(profile_id, profile_name)
            sweep.runs.append(run)
            if _run_one(run, context):
                sweep.interrupted = True
                break
    return sweep


@dataclass
class _Context:
    model: str
    manifest: Manifest
    choice: Choice
    workload: Workload
    slo: Slo | None
    on_event: OnEvent | None
    status: OnStatus
    timeout_s: float
    cache_dir: Path | None


def _run_one(run: ProfileRun, context: _Context) -> bool:
    """One profile from start to stop; True when interrupted (the sweep ends)."""
    from nimctl.runtime.manage import start_instance
    from nimctl.runtime.planning import check_offline

    label = f"{run.profile_name} [{run.profile_id[:12]}]"
    context.status(f"{label}: starting ({context.choice.runtime})")
    try:
        spec = _plan(run.profile_id, context)
        run.instance, run.url = spec.name, spec.url
        profile = context.manifest.profile_by_id_or_name(run.profile_id)
        # The pinned profile's engine arguments, then those given after `--` (none in a sweep).
        run.engine_args = [*(profile.engine_args if profile is not None else []), *spec.engine_args]
        check_offline(spec)
        started = start_instance(spec, docker_answers=context.choice.docker_answers)
    except KeyboardInterrupt:  # nothing runs yet: start_instance removes what it half made
        run.error = "interrupted while starting"
        return True
    except NimctlError as exc:
        run.error = _describe(exc)
        context.status(f"{label}: could not start: {exc.message}")
        return False
    interrupted = False
    try:
        interrupted = _measure(run, started, label, context)
    except KeyboardInterrupt:
        interrupted = True
        run.error = run.error or "interrupted"
    except NimctlError as exc:
        run.error = _describe(exc)
        context.status(f"{label}: {exc.message}")
    finally:
        # Also on any other exception (a bug): the instance must not outlive the sweep.
        interrupted = _stop(run, started, label, context.status) or interrupted
    return interrupted


def _plan(profile_id: str, context: _Context) -> RunSpec:
    """The run spec ``nimctl run MODEL --profile ID`` would make, on a free port and a name of the sweep's."""
    from nimctl.runtime.credentials import Security
    from nimctl.runtime.planning import plan_run
    from nimctl.runtime.spec import check_name, default_name

    # nimctl-bench-MODEL: a user's own nimctl-MODEL may be running, and must stay untouched.
    name = default_name(context.manifest, context.model).replace("nimctl-", "nimctl-bench-", 1)
    name = check_name(name[:63])
    return plan_run(
        model=context.model,
        runtime=context.choice.runtime,
        profile=profile_id,
        port=_free_port("127.0.0.1"),
        name=name,
        cache_dir=context.cache_dir,
        runtime_note=context.choice.note,
        security=Security(),  # nimctl run's default: a key of its own, on loopback
    )


def _free_port(host: str) -> int:
    from nimctl.runtime.ports import port_free, suggest_port

    if port_free(host, contract.CONTAINER_PORT):
        return contract.CONTAINER_PORT
    port = suggest_port(host, contract.CONTAINER_PORT, tries=1000)
    if port is None:
        raise UsageError(f"no free port on {host} from {contract.CONTAINER_PORT} on, for the instances")
    return port


def _measure(run: ProfileRun, started: Started, label: str, context: _Context) -> bool:
    """Wait for ready, then bench; True when the sweep was interrupted."""
    from nimctl.bench.sweep import run_sweep
    from nimctl.client import NimClient
    from nimctl.runtime import credentials
    from nimctl.runtime.manage import wait_for

    def keep_tail(event: ReadinessEvent) -> None:
        if event.phase == "failed":
            run.log_tail = list(event.log_tail[-_LOG_TAIL_LINES:])

    spec = started.spec
    run.started_s = wait_for(started, timeout=context.timeout_s, on_event=keep_tail)
    context.status(f"{label}: ready after {run.started_s:.0f} s")
    found = credentials.for_url(spec.url)
    api_key = found.api_key() if found is not None else None
    tls = found.ssl_context() if found is not None else None
    with NimClient(spec.url, api_key=api_key, tls=tls) as client:
        served = client.default_model()
        with contextlib.suppress(NimctlError):  # only recorded: no version must not stop the bench
            run.server_version = client.version().release
    result = run_sweep(
        spec.url,
        served,
        context.workload,
        api_key=api_key,
        slo=context.slo,
        on_event=context.on_event,
        tls=tls,
    )
    run.result = result
    if result.interrupted:
        run.error = "interrupted"
        return True
    if result.failure is not None:
        run.error = result.failure
    return False


def _stop(run: ProfileRun, started: Started, label: str, status: OnStatus) -> bool:
    """Stop and remove the instance with every stop signal held back; True if one came meanwhile."""
    from nimctl.runtime.manage import stop_handle

    held: list[int] = []
    with handling(_STOP_SIGNALS, lambda signum, _frame: held.append(signum)):
        _say(status, f"{label}: stopping")
        try:
            stop_handle(started)
        except NimctlError as exc:
            failed = f"stopping {started.spec.name} failed: {exc.message}; nimctl stop {started.spec.name}"
            run.error = f"{run.error}; {failed}" if run.error else failed
            _say(status, f"{label}: {failed}")
        else:
            _say(status, f"{label}: stopped")
    return bool(held)


def _say(status: OnStatus, line: str) -> None:
    # A status line that finds no terminal any more (SIGHUP) must not cut the stop short.
    with contextlib.suppress(OSError):
        status(line)


def _describe(exc: NimctlError) -> str:
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message


# -- signals --------------------------------------------------------------------------------------


def _interrupt(_signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt
