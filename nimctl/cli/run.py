"""``nimctl run``: from nothing to a ready NIM, in a container (or a host process)."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from nimctl import contract
from nimctl.cli._common import Preference, output
from nimctl.cli._run_options import (
    AssumeGpusOption,
    CacheOption,
    EnvOption,
    GpusOption,
    HostOption,
    IdleStopOption,
    IKnowOption,
    ImageOption,
    LoraDirOption,
    LoraRefreshOption,
    MaxModelLenOption,
    ModelArgument,
    MtlsOption,
    NameOption,
    NoAuthOption,
    NodesOption,
    OfflineOption,
    PortOption,
    PreferOption,
    ProfileOption,
    RestartOption,
    TlsHostOption,
    TlsOption,
    given,
)
from nimctl.errors import EXIT_HANGUP, EXIT_INTERRUPTED, EXIT_TERMINATED

if TYPE_CHECKING:
    from nimctl.output import Output
    from nimctl.runtime.instances import Stopped
    from nimctl.runtime.manage import Started
    from nimctl.runtime.spec import RunSpec

DEFAULT_TIMEOUT_S = 1800.0  # NIM's Helm chart allows model start-up 30 minutes


def run(
    ctx: typer.Context,
    model: ModelArgument = None,
    profile: ProfileOption = None,
    gpus: GpusOption = None,
    assume_gpus: AssumeGpusOption = None,
    prefer: PreferOption = Preference.throughput,
    lora_dir: LoraDirOption = None,
    lora_alias: Annotated[
        Path | None,
        # The option's first name, kept so that command lines written for it still work.
        typer.Option("--lora", hidden=True, show_default=False),
    ] = None,
    lora_refresh: LoraRefreshOption = None,
    max_model_len: MaxModelLenOption = None,
    nodes: NodesOption = 1,
    port: PortOption = contract.CONTAINER_PORT,
    host: HostOption = "127.0.0.1",
    name: NameOption = None,
    cache: CacheOption = None,
    env: EnvOption = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return once ready, leaving the instance running.")
    ] = False,
    runtime: Annotated[
        str,
        typer.Option("--runtime", help="docker, local (a host process), or auto (Docker when it answers)."),
    ] = "auto",
    image: ImageOption = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for ready before giving up.")
    ] = DEFAULT_TIMEOUT_S,
    restart: RestartOption = "no",
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the equivalent docker run (or shell) command; start nothing."),
    ] = False,
    i_know: IKnowOption = False,
    no_auth: NoAuthOption = False,
    tls: TlsOption = False,
    tls_host: TlsHostOption = None,
    mtls: MtlsOption = False,
    offline: OfflineOption = False,
    idle_stop: IdleStopOption = None,
) -> None:
    """Start a NIM for MODEL and wait until it is ready; arguments after -- go to the engine."""
    from nimctl.errors import UsageError
    from nimctl.gpu import detect_inventory
    from nimctl.runtime.manage import choose_runtime, dry_run_line
    from nimctl.runtime.planning import check_offline, is_loopback, plan_run

    out = output(ctx)
    engine_args = list(ctx.args)
    if model is not None and model.startswith("-"):  # `nimctl run -- --flag`: no model given
        engine_args.insert(0, model)
        model = None
    if runtime not in ("auto", "docker", "local"):
        raise UsageError(f"bad --runtime {runtime!r}: use auto, docker or local")
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    from nimctl.runtime.credentials import Security

    security = Security(
        api_key=not no_auth,
        tls=tls or mtls or bool(tls_host),
        mtls=mtls,
        tls_hosts=tuple(tls_host or ()),
        open_to_network=i_know,
    )
    if lora_dir is not None and lora_alias is not None:
        raise UsageError("--lora is --lora-dir's old name: give one of them")
    choice = choose_runtime(runtime)  # type: ignore[arg-type]
    chosen = choice.runtime
    spec = plan_run(
        model=model,
        runtime=chosen,
        profile=profile,
        gpus=gpus,
        # Given or from the variable: the container gets it too; the default is nim-serve's own.
        prefer=given(ctx, "prefer", prefer.value),
        lora_dir=lora_dir if lora_dir is not None else lora_alias,
        lora_refresh=lora_refresh,
        max_model_len=max_model_len,
        port=port,
        host=host,
        name=name,
        cache_dir=cache,
        env_pairs=env or [],
        image=image,
        engine_args=engine_args,
        restart=restart,
        # None: $NIMCTL_ASSUME_GPUS, else this machine's (plan_run reads them itself).
        inventory=detect_inventory(assume_gpus) if assume_gpus is not None else None,
        runtime_note=choice.note,
        security=security,
        offline=offline,
        nodes=nodes,
        idle_stop=idle_stop,
    )
    if no_auth and not is_loopback(spec.host):
        out.warn(
            f"--no-auth on {spec.host}: anyone who reaches this address can use the model; "
            "leave --no-auth out to require a key"
        )
    if choice.note:
        out.info(choice.note)
    if spec.profile_id:
        out.info(f"profile: {spec.selection} [{spec.profile_id[:12]}]")
    else:
        out.info(f"profile: none ({spec.selection})")
    if dry_run:
        out.text(dry_run_line(spec, detach=detach))
        return
    check_offline(spec)  # before anything starts: a model missing from the cache is exit 11 now
    _start_and_wait(out, spec, detach=detach, timeout=timeout, docker_answers=choice.docker_answers)


class Interrupted(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP, raised as a KeyboardInterrupt so that one path stops the instance."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


# Handled alike while an instance may be running: a closed terminal (SIGHUP) or a `kill`
# (SIGTERM) must not leave a foreground container or host process behind, any more than Ctrl-C.
_EXIT_FOR_SIGNAL = {
    signal.SIGINT: EXIT_INTERRUPTED,
    signal.SIGTERM: EXIT_TERMINATED,
    signal.SIGHUP: EXIT_HANGUP,
}


def _exit_code(exc: KeyboardInterrupt) -> int:
    return _EXIT_FOR_SIGNAL[exc.signum if isinstance(exc, Interrupted) else signal.SIGINT]


@contextlib.contextmanager
def _stop_signals(name: str) -> Iterator[None]:
    """The first SIGINT, SIGTERM or SIGHUP raises :class:`Interrupted`; every later one is only
    acknowledged, so that nothing cuts short the stop the first one started (or leaves the
    instance running because it came between the interruption and the stop)."""
    interrupted = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal interrupted
        if not interrupted:
            interrupted = True
            raise Interrupted(signum)
        # Not through Rich: a signal handler may run in the middle of one of its writes.
        with contextlib.suppress(OSError):
            os.write(2, f"{name}: still stopping, please wait\n".encode())

    from nimctl.runtime.signals import handling

    with handling(_EXIT_FOR_SIGNAL, on_signal):
        yield


def _say(out: Output, message: str) -> None:
    """A progress line that may find no terminal any more (SIGHUP): losing it must not stop the stop."""
    with contextlib.suppress(OSError):
        out.info(message)


def _stop(started: Started) -> Stopped:
    from nimctl.runtime.manage import stop_handle

    return stop_handle(started)


def _start_and_wait(
    out: Output, spec: RunSpec, *, detach: bool, timeout: float, docker_answers: bool | None
) -> None:
    from nimctl.cli.progress import BuildView
    from nimctl.runtime.manage import start_instance

    with _stop_signals(spec.name):
        try:
            with BuildView(out) as build_view:
                started = start_instance(spec, on_build=build_view, docker_answers=docker_answers)
        except KeyboardInterrupt as exc:  # nothing runs yet: a half-created container is removed
            raise typer.Exit(_exit_code(exc)) from None
        try:
            _wait_and_follow(out, started, detach=detach, timeout=timeout)
        finally:
            started.close()


def _wait_and_follow(out: Output, started: Started, *, detach: bool, timeout: float) -> None:
    from nimctl.cli.progress import ReadinessView, format_duration
    from nimctl.errors import RuntimeFailure, WaitTimeoutError
    from nimctl.runtime.manage import wait_for

    spec = started.spec
    out.info(
        f"{spec.name}: started ({spec.runtime}, {started.what_runs}); waiting for {spec.url}/v1/health/ready"
    )
    try:
        with ReadinessView(out, spec.name) as ready_view:
            took = wait_for(started, timeout=timeout, on_event=ready_view)
    except KeyboardInterrupt as exc:
        _say(out, f"interrupted: stopping {spec.name}")
        _stop(started)
        raise typer.Exit(_exit_code(exc)) from None
    except BaseException as exc:
        # Whatever went wrong, a foreground instance must not outlive this command; nor may what
        # is left of a group one of whose members ended while starting (it cannot serve).
        if not detach or (spec.nodes > 1 and not isinstance(exc, WaitTimeoutError)):
            _stop(started)
        elif isinstance(exc, WaitTimeoutError):
            exc.hint = f"it is still starting: nimctl logs -f {spec.name}; nimctl stop {spec.name} to give up"
        raise
    if detach:
        out.text(
            f"{spec.model} is ready at {spec.url} after {format_duration(took)} "
            f"(instance {spec.name}, {spec.runtime})\n"
            f"  nimctl chat --url {spec.url} 'Describe this image' --image PATH\n"
            f'  eval "$(nimctl env {spec.name})"   # OPENAI_BASE_URL and OPENAI_API_KEY for other clients\n'
            f"  nimctl logs -f {spec.name}\n"
            f"  nimctl stop {spec.name}"
        )
        return
    out.info(f"{spec.name}: ready at {spec.url} after {format_duration(took)}; Ctrl-C stops and removes it")
    try:
        for line in started.handle.follow():
            out.text(line)
    except KeyboardInterrupt:
        # Asked to stop once ready (Ctrl-C, SIGTERM, SIGHUP): a clean stop is a success, as
        # nim-serve's own exit on SIGTERM is.
        _say(out, f"stopping {spec.name}")
        _stop(started)
        _say(out, f"{spec.name}: stopped and removed")
        return
    except BaseException:
        _stop(started)
        raise
    final = _stop(started).instance
    if final.exit_code:
        raise RuntimeFailure(
            f"{spec.name} exited with code {final.exit_code}", hint="its last log lines are above"
        )
    out.info(f"{spec.name}: ended and removed")


def register(app: typer.Typer) -> None:
    app.command("run", context_settings={"allow_extra_args": True})(run)
