"""NIM's container utilities ``download-to-cache`` and ``create-model-store``, as console scripts.

Thin: read the server's variables (``NIM_CACHE_PATH``, ``NIM_DISABLE_MODEL_DOWNLOAD``, and what
the profile selection reads, through :mod:`nimctl.server.selection_inputs` as
``list-model-profiles`` does), call :mod:`nimctl.store.model_store`, print a summary. Errors go
through :func:`nimctl._entry.run_standalone`: one line, a hint, an exit code from the table.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nimctl import contract
from nimctl.cli._common import FormatOption, output
from nimctl.cli.fetch_view import fetch_with_bar
from nimctl.errors import UsageError
from nimctl.output import Format, format_bytes

if TYPE_CHECKING:
    from nimctl.output import Output
    from nimctl.profiles import Profile
    from nimctl.store.model_store import ModelFiles
    from nimctl.store.pull import PullResult

ModelOption = Annotated[
    str | None,
    typer.Option(
        "--model",
        metavar="MODEL",
        help="A manifest name or file, hf://ORG/NAME[@REVISION], builtin://NAME or a folder. "
        "Default: $NIM_MODEL_PATH, else nim-serve's default model.",
        show_default=False,
    ),
]


@dataclass(frozen=True)
class _Settings:
    cache: Path
    offline: bool


def download_to_cache(
    ctx: typer.Context,
    more_profiles: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="ID",
            help="More profile ids, as NIM writes them: -p ID ID ...",
            show_default=False,
        ),
    ] = None,
    profiles: Annotated[
        list[str] | None,
        typer.Option(
            "--profiles",
            "--profile",
            "-p",
            metavar="ID",
            help="Profile hashes to download (an id, a 6+ digit prefix or a name; repeatable). If none "
            "are provided, the optimal profile is downloaded: the one nim-serve would select here.",
            show_default=False,
        ),
    ] = None,
    all_profiles: Annotated[
        bool, typer.Option("--all", help="Set this to download all profiles to cache.")
    ] = False,
    lora: Annotated[
        bool,
        typer.Option(
            "--lora",
            help="Set this to download the default LoRA profile. This expects --profiles and --all "
            "arguments are not specified.",
        ),
    ] = False,
    model: ModelOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Downloads selected or default model profile(s) to NIM cache ($NIM_CACHE_PATH). Can be used to
    pre-cache profiles prior to deployment, for example on a connected machine before an air-gapped
    run.

    In nimctl's manifests every profile of a model reads the model's one source (hf://, builtin://
    or a folder), so the files are the source's, the same for all of its profiles. HF_TOKEN is used
    for gated and private models and never printed. With NIM_DISABLE_MODEL_DOWNLOAD=1 nothing is
    downloaded: the cache is only checked, and what it lacks is named."""
    from nimctl.server.selection_inputs import selection_inputs
    from nimctl.store.model_store import find_profiles, model_files

    out = output(ctx, fmt)
    refs = [*(profiles or []), *(more_profiles or [])]
    if all_profiles and refs:
        raise UsageError("--all downloads every profile: give it or --profiles, not both")
    if lora and (all_profiles or refs):
        raise UsageError("--lora chooses the default LoRA profile: leave --profiles and --all out")
    settings = _settings()
    inputs = selection_inputs(model=model, lora=True if lora else None)
    target = model_files(inputs.model)
    if all_profiles:
        chosen = list(target.manifest.profiles) if target.manifest is not None else []
    elif refs:
        chosen = find_profiles(target, refs)
    else:
        chosen = _selected(target, inputs)
    result = _fetch(out, target, settings)
    data = {**result.to_dict(), "cache": str(settings.cache), "profiles": [_profile(p) for p in chosen]}

    def render() -> None:
        out.text(_describe(target, result))
        out.text(f"folder:   {result.folder}")
        if chosen:
            out.text("profiles: " + ", ".join(f"{p.name} ({p.id[:12]})" for p in chosen))

    out.result(data, render)


def create_model_store(
    ctx: typer.Context,
    profile: Annotated[
        str,
        typer.Option(
            "--profile",
            "-p",
            metavar="ID",
            help="Profile hash to create a model directory of (an id, a 6+ digit prefix or a name). "
            "Will be downloaded if not present.",
            show_default=False,
        ),
    ],
    model_store: Annotated[
        Path,
        typer.Option(
            "--model-store",
            "-m",
            metavar="DIR",
            help="Directory path where model --profile will be extracted and copied to (new or empty).",
            show_default=False,
        ),
    ],
    model: ModelOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Extracts files from a cached model profile and creates a properly formatted directory: real
    files (not links into the cache) with the model's config.json, for NIM_MODEL_PATH to point at.
    If the profile is not already cached, it will be downloaded to the model cache ($NIM_CACHE_PATH);
    downloading a gated or private model requires HF_TOKEN in the environment, and with
    NIM_DISABLE_MODEL_DOWNLOAD=1 nothing is downloaded.

    In nimctl's manifests every profile of a model reads the model's one source (hf://, builtin://
    or a folder), so the files are the source's, the same for all of its profiles."""
    from nimctl.server.selection_inputs import selection_inputs
    from nimctl.store.model_store import create_model_store as copy_store
    from nimctl.store.model_store import find_profiles, model_files

    out = output(ctx, fmt)
    settings = _settings()
    target = model_files(selection_inputs(model=model).model)
    [chosen] = find_profiles(target, [profile])
    result = _fetch(out, target, settings)
    store = copy_store(result.folder, model_store)
    data = {
        **store.to_dict(),
        "profile": _profile(chosen),
        "model": result.uri,
        "revision": result.revision,
        "commit": result.commit,
        "cache": str(settings.cache),
        "fetched_bytes": result.fetched_bytes,
    }

    def render() -> None:
        out.text(f"{store.folder}: {format_bytes(store.size_bytes)} in {store.files} files")
        out.text(f"from:    {_describe(target, result)}")
        out.text(f"profile: {chosen.name} ({chosen.id[:12]})")
        out.text(f"use it:  {contract.MODEL_PATH}={store.folder.resolve()}")

    out.result(data, render)


def download_to_cache_main() -> None:
    """``download-to-cache`` (in the container, or on the host for its cache)."""
    from nimctl._entry import run_standalone

    run_standalone(download_to_cache, "download-to-cache")


def create_model_store_main() -> None:
    """``create-model-store`` (in the container, or on the host)."""
    from nimctl._entry import run_standalone

    run_standalone(create_model_store, "create-model-store")


# -- helpers ------------------------------------------------------------------------------------


def _settings() -> _Settings:
    """The cache and the offline switch, read as nim-serve reads them; only these two variables, so
    one these commands do not use (a bad NIM_SERVER_PORT) does not stop them."""
    from nimctl.server.config import ServerConfig

    names = (contract.CACHE_PATH, contract.DISABLE_MODEL_DOWNLOAD)
    config = ServerConfig.from_env({name: os.environ[name] for name in names if name in os.environ})
    return _Settings(config.cache_path.expanduser(), config.disable_model_download)


def _selected(target: ModelFiles, inputs: Any) -> list[Profile]:
    """The profile nim-serve would select on this machine (none without a manifest)."""
    if target.manifest is None:
        return []
    from nimctl.gpu import detect_inventory
    from nimctl.profiles import select_profile

    selection = select_profile(
        target.manifest,
        detect_inventory(),
        inputs.profile,
        inputs.prefer,
        inputs.lora,
        max_model_len=inputs.max_model_len,
    )
    return [selection.profile]


def _fetch(out: Output, target: ModelFiles, settings: _Settings) -> PullResult:
    """The model's files into the cache, as ``nimctl pull`` fetches them (its bar, its Ctrl-C)."""
    from nimctl.store.model_store import fetch_files

    def work(on_progress: Any) -> PullResult:
        return fetch_files(target, settings.cache, offline=settings.offline, on_progress=on_progress)

    return fetch_with_bar(out, target.source, settings.cache, work, verb="downloading")


def _describe(target: ModelFiles, result: PullResult) -> str:
    if target.source.kind == "local":
        return f"{result.folder}: a local folder, {format_bytes(result.size_bytes)} in {result.files} files"
    where = f"@{result.revision} ({result.commit[:12]})" if result.commit else ""
    fetched = f"{format_bytes(result.fetched_bytes)} fetched" if result.fetched_bytes else "all in the cache"
    return f"{result.uri}{where}: {format_bytes(result.size_bytes)} in {result.files} files, {fetched}"


def _profile(profile: Profile) -> dict[str, str]:
    return {"id": profile.id, "name": profile.name}
