"""``nimctl run``: from nothing to a ready NIM, in a container (or a host process)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from nimctl.cli._common import output

if TYPE_CHECKING:
    from nimctl.output import Output
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
            help="GPUs for the instance: all, none, a count (2) or ids (0,1) [all for a GPU profile].",
            show_default=False,
        ),
    ] = None,
    port: Annotated[int, typer.Option("--port", help="Host port of the server.")] = 8000,
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
            help="Host model cache, mounted at /opt/nim/.cache [~/.cache/nimctl].",
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
) -> None:
    """Start a NIM for MODEL and wait until it is ready; arguments after -- go to the engine."""
    from nimctl.errors import UsageError
    from nimctl.runtime.manage import choose_runtime
    from nimctl.runtime.spec import docker_run_line, local_run_line, plan_run

    out = output(ctx)
    engine_args = list(ctx.args)
    if model is not None and model.startswith("-"):  # `nimctl run -- --flag`: no model given
        engine_args.insert(0, model)
        model = None
    if runtime not in ("auto", "docker", "local"):
        raise UsageError(f"bad --runtime {runtime!r}: use auto, docker or local")
    if timeout <= 0:
        raise UsageError("--timeout must be positive")
    choice = choose_runtime(runtime)  # type: ignore[arg-type]
    chosen, note = choice.runtime, choice.note
    spec = plan_run(
        model=model,
        runtime=chosen,
        profile=profile,
        gpus=gpus,
        port=port,
        host=host,
        name=name,
        cache_dir=cache,
        env_pairs=env or [],
        image=image,
        engine_args=engine_args,
        restart=restart,
    )
    if note:
        out.info(note)
    if spec.profile_id:
        out.info(f"profile: {spec.selection} [{spec.profile_id[:12]}]")
    else:
        out.info(f"profile: none ({spec.selection})")
    if dry_run:
        out.text(docker_run_line(spec, detach=detach) if chosen == "docker" else local_run_line(spec))
        return
    _start_and_wait(out, spec, detach=detach, timeout=timeout, docker_answers=choice.docker_answers)


def _start_and_wait(
    out: Output, spec: RunSpec, *, detach: bool, timeout: float, docker_answers: bool | None
) -> None:
    from nimctl.cli.runtime import BuildView
    from nimctl.runtime.manage import start_instance

    with BuildView(out) as build_view:
        started = start_instance(spec, on_build=build_view, docker_answers=docker_answers)
    try:
        _wait_and_follow(out, started, detach=detach, timeout=timeout)
    finally:
        started.close()


def _wait_and_follow(out: Output, started: Started, *, detach: bool, timeout: float) -> None:
    from nimctl.cli.runtime import ReadinessView, format_duration
    from nimctl.errors import RuntimeFailure, TimeoutError_
    from nimctl.runtime.manage import stop_handle, wait_for

    spec = started.spec
    where = f"image {spec.image}" if spec.runtime == "docker" else "a host process"
    out.info(f"{spec.name}: started ({spec.runtime}, {where}); waiting for {spec.url}/v1/health/ready")
    try:
        with ReadinessView(out, spec.name) as ready_view:
            took = wait_for(started, timeout=timeout, on_event=ready_view)
    except KeyboardInterrupt:
        out.info(f"interrupted: stopping {spec.name}")
        stop_handle(started)
        raise typer.Exit(130) from None
    except BaseException as exc:
        # Whatever went wrong, a foreground instance must not outlive this command.
        if not detach:
            stop_handle(started)
        elif isinstance(exc, TimeoutError_):
            exc.hint = f"it is still starting: nimctl logs -f {spec.name}; nimctl stop {spec.name} to give up"
        raise
    if detach:
        out.text(
            f"{spec.model} is ready at {spec.url} after {format_duration(took)} "
            f"(instance {spec.name}, {spec.runtime})\n"
            f"  nimctl chat --url {spec.url} 'Describe this image' --image PATH\n"
            f"  nimctl logs -f {spec.name}\n"
            f"  nimctl stop {spec.name}"
        )
        return
    out.info(f"{spec.name}: ready at {spec.url} after {format_duration(took)}; Ctrl-C stops and removes it")
    try:
        for line in started.handle.follow():
            out.text(line)
    except KeyboardInterrupt:
        out.info(f"stopping {spec.name}")
        stop_handle(started)
        out.info(f"{spec.name}: stopped and removed")
        return
    except BaseException:
        stop_handle(started)
        raise
    final = stop_handle(started).instance
    if final.exit_code:
        raise RuntimeFailure(
            f"{spec.name} exited with code {final.exit_code}", hint="its last log lines are above"
        )
    out.info(f"{spec.name}: ended and removed")


def register(app: typer.Typer) -> None:
    app.command("run", context_settings={"allow_extra_args": True})(run)
