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
from nimctl.cli.gpus import ASSUME_GPUS_GRAMMAR
from nimctl.errors import EXIT_HANGUP, EXIT_INTERRUPTED, EXIT_TERMINATED

if TYPE_CHECKING:
    from nimctl.output import Output
    from nimctl.runtime.instances import Stopped
    from nimctl.runtime.manage import Started
    from nimctl.runtime.spec import RunSpec

DEFAULT_TIMEOUT_S = 1800.0  # NIM's Helm chart allows model start-up 30 minutes


def run(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Argument(
            help="Model or manifest: a name (tiny-vlm), a manifest file, a URI (hf://ORG/NAME) or a "
            "model folder [tiny-vlm].",
            show_default=False,
        ),
    ] = None,
    profile: Annotated[
        str | None,
        typer.Option("--profile", help="Profile id or name [chosen for this machine].", show_default=False),
    ] = None,
    gpus: Annotated[
        str | None,
        typer.Option(
            "--gpus",
            help="GPUs of this machine for the instance: all, none, a count (2) or ids (0,1) [all for a "
            "GPU profile]. To describe other hardware: --assume-gpus.",
            show_default=False,
        ),
    ] = None,
    assume_gpus: Annotated[
        str | None,
        typer.Option(
            "--assume-gpus",
            metavar="SPEC",
            help="Plan on these GPUs instead of this machine's (with --dry-run: what would run there; "
            f"--gpus then picks among them): {ASSUME_GPUS_GRAMMAR}",
            show_default=False,
        ),
    ] = None,
    prefer: Annotated[
        Preference,
        typer.Option(
            "--prefer",
            envvar=contract.PROFILE_PREFERENCE,
            show_envvar=False,
            case_sensitive=False,
            help="Between runnable profiles: throughput (the fewest GPUs) or latency (the most) "
            "[env NIMCTL_PROFILE_PREFERENCE].",
        ),
    ] = Preference.throughput,
    lora_dir: Annotated[
        Path | None,
        typer.Option(
            "--lora-dir",
            help=f"Folder of LoRA adapters, one sub-folder each: sets {contract.PEFT_SOURCE} (mounted "
            f"read-only at {contract.CONTAINER_LORA}), so a LoRA profile is chosen.",
            show_default=False,
        ),
    ] = None,
    lora_alias: Annotated[
        Path | None,
        # The option's first name, kept so that command lines written for it still work.
        typer.Option("--lora", hidden=True, show_default=False),
    ] = None,
    lora_refresh: Annotated[
        float | None,
        typer.Option(
            "--lora-refresh",
            metavar="S",
            help=f"Rescan --lora-dir every S seconds (dynamic mode: sets {contract.PEFT_REFRESH_INTERVAL}); "
            "adapters added or removed there are served or dropped, and `nimctl lora add/rm` write there.",
            show_default=False,
        ),
    ] = None,
    max_model_len: Annotated[
        int | None,
        typer.Option(
            "--max-model-len",
            min=1,
            help=f"Context length: sets {contract.MAX_MODEL_LEN}; profiles are judged at it.",
            show_default=False,
        ),
    ] = None,
    nodes: Annotated[
        int,
        typer.Option(
            "--nodes",
            help="Nodes of a multi-node group on this machine: a leader (the instance, its port) and "
            "workers NAME-node1.. (containers on a network of their own, or processes on loopback "
            "addresses); the profile must span that many nodes.",
        ),
    ] = 1,
    port: Annotated[int, typer.Option("--port", help="Host port of the server.")] = contract.CONTAINER_PORT,
    host: Annotated[
        str, typer.Option("--host", help="Host address to publish on (0.0.0.0 exposes it to the network).")
    ] = "127.0.0.1",
    name: Annotated[
        str | None, typer.Option("--name", help="Instance name [nimctl-MODEL].", show_default=False)
    ] = None,
    cache: Annotated[
        Path | None,
        typer.Option(
            "--cache",
            help=f"Host model cache, mounted at {contract.CONTAINER_CACHE} [~/.cache/nimctl].",
            show_default=False,
        ),
    ] = None,
    env: Annotated[
        list[str] | None,
        typer.Option("--env", "-e", help="KEY=VALUE for the server (repeatable); KEY alone passes yours on."),
    ] = None,
    detach: Annotated[
        bool, typer.Option("--detach", "-d", help="Return once ready, leaving the instance running.")
    ] = False,
    runtime: Annotated[
        str,
        typer.Option("--runtime", help="docker, local (a host process), or auto (Docker when it answers)."),
    ] = "auto",
    image: Annotated[
        str | None,
        typer.Option(
            "--image", help="Image to run [nimctl/nim-DEVICE:VERSION, built if missing].", show_default=False
        ),
    ] = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for ready before giving up.")
    ] = DEFAULT_TIMEOUT_S,
    restart: Annotated[
        str,
        typer.Option("--restart", help="Docker restart policy: no, on-failure[:N], always, unless-stopped."),
    ] = "no",
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the equivalent docker run (or shell) command; start nothing."),
    ] = False,
    i_know: Annotated[
        bool,
        typer.Option("--i-know", help="With --no-auth: serve keyless on a non-loopback --host, on purpose."),
    ] = False,
    no_auth: Annotated[
        bool,
        typer.Option(
            "--no-auth",
            help="Serve without an API key (by default each instance gets its own, used by nimctl's "
            "commands; `nimctl env NAME` prints it).",
        ),
    ] = False,
    tls: Annotated[
        bool,
        typer.Option("--tls", help="Serve https, with a certificate from a CA made for this instance."),
    ] = False,
    tls_host: Annotated[
        list[str] | None,
        typer.Option(
            "--tls-host",
            metavar="NAME",
            help="Another name or address the certificate is valid for (repeatable; always: localhost, "
            "127.0.0.1, ::1). Implies --tls.",
            show_default=False,
        ),
    ] = None,
    mtls: Annotated[
        bool,
        typer.Option(
            "--mtls",
            help="Mutual TLS: clients must show a certificate the instance's CA issued. Implies --tls.",
        ),
    ] = False,
    offline: Annotated[
        bool,
        typer.Option(
            "--offline",
            help="Never touch the network: serve from the model cache only (the server gets "
            f"{contract.DISABLE_MODEL_DOWNLOAD}=1 and HF_HUB_OFFLINE=1). A hub model missing from the "
            "cache fails at once, naming the missing files; `nimctl pull` or `nimctl bundle import` fills "
            f"it. -e {contract.DISABLE_MODEL_DOWNLOAD}=1 means the same.",
        ),
    ] = False,
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
        prefer=_given(ctx, "prefer", prefer.value),
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


def _given(ctx: typer.Context, name: str, value: str) -> str | None:
    """``value`` when the user gave the option (or its variable); None when it is the default."""
    source = ctx.get_parameter_source(name)
    # By name: Typer's context may carry its own copy of click's ParameterSource enum.
    return None if source is None or source.name == "DEFAULT" else value
