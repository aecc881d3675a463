"""``nimctl profiles list|show|select`` and the container's ``list-model-profiles``.

Thin: parse, call :mod:`nimctl.profiles`, print. Pydantic and NVML load inside the command bodies.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nimctl import contract
from nimctl.cli._common import FormatOption, Preference, output
from nimctl.cli.gpus import AssumeGpusOption, OldGpusOption, assumed_inventory
from nimctl.errors import ProfileError, UsageError
from nimctl.output import Format

if TYPE_CHECKING:
    from nimctl.profiles import Manifest, Profile
    from nimctl.profiles.report import ProfileReport
    from nimctl.profiles.selection import Prefer

ModelArgument = Annotated[
    str | None,
    typer.Argument(
        metavar="MODEL|MANIFEST",
        help="A model name (tiny-vlm, Qwen2.5-VL-7B-Instruct), a source URI (hf://org/name) "
        "or a manifest path.",
        show_default=False,
    ),
]


PreferOption = Annotated[
    Preference,
    typer.Option("--prefer", case_sensitive=False, help="throughput: the fewest GPUs; latency: the most."),
]
LoraOption = Annotated[bool, typer.Option("--lora", help="Choose among the LoRA-capable profiles only.")]
ServePreferOption = Annotated[
    Preference | None,
    typer.Option(
        "--prefer",
        case_sensitive=False,
        help="throughput: the fewest GPUs; latency: the most. Default: $NIMCTL_PROFILE_PREFERENCE, "
        "else throughput, as nim-serve.",
        show_default=False,
    ),
]
MaxModelLenOption = Annotated[
    int | None,
    typer.Option("--max-model-len", min=1, help="Estimate memory for this context instead of the profile's."),
]
# The commands that stand for what nim-serve would do (select, list-model-profiles) default to what
# it derives from its variables (nimctl.server.selection_inputs); a value given here wins, as after
# nim-serve.
ServeLoraOption = Annotated[
    bool | None,
    typer.Option(
        "--lora/--no-lora",
        help="Choose among the LoRA-capable profiles only (or not). Default: LoRA when $NIM_PEFT_SOURCE "
        "is set, as nim-serve.",
        show_default=False,
    ),
]
ServeMaxModelLenOption = Annotated[
    int | None,
    typer.Option(
        "--max-model-len",
        min=1,
        help="Estimate memory for this context instead of the profile's. Default: as nim-serve, the last "
        "--max-model-len in $NIM_PASSTHROUGH_ARGS, else $NIM_MAX_MODEL_LEN.",
    ),
]
NodesOption = Annotated[
    int,
    typer.Option(
        "--nodes",
        metavar="N",
        help="Plan a group of N identical nodes, each with these GPUs, running one profile across all "
        "of them: only profiles for N nodes are runnable.",
    ),
]
ServeNodesOption = Annotated[
    int | None,
    typer.Option(
        "--nodes",
        metavar="N",
        help="Plan a group of N identical nodes, each with these GPUs (only profiles for N nodes are "
        "runnable). Default: $NIM_NUM_COMPUTE_NODES, else 1, as nim-serve.",
        show_default=False,
    ),
]
ProfileOption = Annotated[
    str | None,
    typer.Option(
        "--profile",
        "-p",
        metavar="ID|NAME",
        envvar=contract.MODEL_PROFILE,
        show_envvar=False,
        help="Pin a profile: id (or a 6+ digit prefix), name, or 'default' (automatic). "
        "Default: $NIM_MODEL_PROFILE.",
    ),
]
ProfilesDirOption = Annotated[
    Path | None,
    typer.Option(
        "--profiles-dir",
        help="Read manifests from this folder only "
        "(default: $NIMCTL_PROFILES_DIR, /opt/nim/profiles, the built-in ones).",
    ),
]

profiles_app = typer.Typer(
    name="profiles",
    help="Model profiles: what each model can run with on this machine (or one --assume-gpus describes), "
    "and why.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    """``nimctl profiles ...`` and ``nimctl gpus`` (one registration line in main.py for both)."""
    from nimctl.cli import gpus as gpus_command

    app.add_typer(profiles_app, name="profiles")
    gpus_command.register(app)


@profiles_app.command("list")
def list_profiles(
    ctx: typer.Context,
    model: ModelArgument = None,
    assume_gpus: AssumeGpusOption = None,
    old_gpus: OldGpusOption = None,
    prefer: PreferOption = Preference.throughput,
    lora: LoraOption = False,
    max_model_len: MaxModelLenOption = None,
    profile: ProfileOption = None,
    nodes: NodesOption = 1,
    profiles_dir: ProfilesDirOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Every profile of MODEL grouped as NIM does (runnable, LoRA, low memory, incompatible), the chosen
    (or pinned) one marked; without MODEL, one line per known model."""
    out = output(ctx, fmt)
    _check_nodes(nodes)
    inventory = assumed_inventory(out, assume_gpus, old_gpus)
    if model is None:
        # A profile belongs to one model; $NIM_MODEL_PROFILE set for a container is not meant here.
        if profile is not None and _from_command_line(ctx, "profile"):
            raise UsageError("--profile needs MODEL: a profile belongs to one model's manifest")
        from nimctl.profiles.render import print_summaries
        from nimctl.profiles.report import model_summaries

        rows = model_summaries(
            inventory, prefer=prefer.value, lora=lora, profiles_dir=_dir(profiles_dir), nodes=nodes
        )
        out.result(
            {"system": inventory.to_dict(), "nodes": nodes, "models": rows},
            lambda: print_summaries(out, inventory, rows, nodes),
        )
        return
    from nimctl.profiles.render import print_report

    report = _report(model, inventory, profile, prefer.value, lora, max_model_len, profiles_dir, nodes)
    out.result(report.to_dict(), lambda: print_report(out, report))


@profiles_app.command("show")
def show_profile(
    ctx: typer.Context,
    ref: Annotated[
        str | None,
        typer.Argument(
            metavar="ID|NAME",
            help="A profile id (or a 6+ digit prefix) or name. Default: --profile / $NIM_MODEL_PROFILE; "
            "without either, the profile chosen automatically for --model.",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="The model, when a name is in several manifests.")
    ] = None,
    profile: ProfileOption = None,
    assume_gpus: AssumeGpusOption = None,
    old_gpus: OldGpusOption = None,
    prefer: PreferOption = Preference.throughput,
    lora: LoraOption = False,
    max_model_len: MaxModelLenOption = None,
    nodes: NodesOption = 1,
    profiles_dir: ProfilesDirOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """One profile: tags, memory estimate, engine arguments, and why it can or cannot run here."""
    out = output(ctx, fmt)
    _check_nodes(nodes)
    from nimctl.profiles.render import print_profile
    from nimctl.profiles.report import profile_report
    from nimctl.profiles.selection import AUTOMATIC

    wanted = ref or profile
    inventory = assumed_inventory(out, assume_gpus, old_gpus)
    if wanted is None or wanted.strip().lower() in AUTOMATIC:
        if model is None:
            raise UsageError(
                "which profile? give ID|NAME or --profile, or --model MODEL for the one chosen automatically"
            )
        manifest, chosen = _find(model, profiles_dir), None
    else:
        manifest, chosen = _manifest_with_profile(wanted, model, profiles_dir)
    report = profile_report(
        manifest,
        inventory,
        requested=None,
        prefer=prefer.value,
        lora=lora,
        max_model_len=max_model_len,
        nodes=nodes,
    )
    if chosen is None:
        if report.selection is None:  # nothing runnable: the selection's own error, exit 8
            raise report.error or ProfileError(f"no runnable profile for {manifest.name}")
        chosen = report.selection.profile
    item = next(c for c in report.classification if c.profile.id == chosen.id)
    data = {
        **item.profile.to_public_dict(),
        "model": manifest.model.name,
        "manifest": str(manifest.path),
        "system": report.system,
        "nodes": nodes,
        "selected": report.is_selected(item),
        "classification": item.to_dict(),
    }
    out.result(data, lambda: print_profile(out, manifest, item, report.system, report.is_selected(item)))


@profiles_app.command("select")
def select(
    ctx: typer.Context,
    model: ModelArgument = None,
    profile: ProfileOption = None,
    assume_gpus: AssumeGpusOption = None,
    old_gpus: OldGpusOption = None,
    prefer: ServePreferOption = None,
    lora: ServeLoraOption = None,
    max_model_len: ServeMaxModelLenOption = None,
    nodes: ServeNodesOption = None,
    profiles_dir: ProfilesDirOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """Print only the id of the profile that would run (for scripts); exit 8 with the reason when none.

    What nim-serve would choose: MODEL, --profile, --lora and --max-model-len default to what it
    derives from NIM_MODEL_PATH (else its default model), NIM_MODEL_PROFILE, NIM_PEFT_SOURCE and
    NIM_PASSTHROUGH_ARGS / NIM_MAX_MODEL_LEN, --nodes to NIM_NUM_COMPUTE_NODES."""
    out = output(ctx, fmt)
    from nimctl.profiles import select_profile
    from nimctl.server.selection_inputs import selection_inputs

    _check_nodes(nodes)
    inputs = selection_inputs(
        model=model,
        profile=profile,
        lora=lora,
        max_model_len=max_model_len,
        prefer=prefer and prefer.value,
        nodes=nodes,
    )
    manifest = _find(inputs.model, profiles_dir)
    inventory = assumed_inventory(out, assume_gpus, old_gpus)
    selection = select_profile(
        manifest,
        inventory,
        inputs.profile,
        inputs.prefer,
        inputs.lora,
        max_model_len=inputs.max_model_len,
        nodes=inputs.nodes,
    )
    out.result({**selection.to_dict(), "nodes": inputs.nodes}, lambda: out.text(selection.profile.id))


def list_model_profiles(
    ctx: typer.Context,
    model: ModelArgument = None,
    profile: ProfileOption = None,
    assume_gpus: AssumeGpusOption = None,
    old_gpus: OldGpusOption = None,
    prefer: ServePreferOption = None,
    lora: ServeLoraOption = None,
    max_model_len: ServeMaxModelLenOption = None,
    profiles_dir: ProfilesDirOption = None,
    fmt: FormatOption = Format.table,
) -> None:
    """List the model's profiles grouped by what this system can run, the one nim-serve would choose
    marked (default model: $NIM_MODEL_PATH, else nim-serve's)."""
    out = output(ctx, fmt)
    from nimctl.profiles.report import nim_text
    from nimctl.server.selection_inputs import selection_inputs

    inputs = selection_inputs(
        model=model,
        profile=profile,
        lora=lora,
        max_model_len=max_model_len,
        prefer=prefer and prefer.value,
    )
    inventory = assumed_inventory(out, assume_gpus, old_gpus)
    report = _report(
        inputs.model,
        inventory,
        inputs.profile,
        inputs.prefer,
        inputs.lora,
        inputs.max_model_len,
        profiles_dir,
        inputs.nodes,
    )
    out.result(report.to_dict(), lambda: out.text(nim_text(report)))


def list_model_profiles_main() -> None:
    """``list-model-profiles`` (in the container): NIM's listing for the served model."""
    from nimctl._entry import run_standalone

    run_standalone(list_model_profiles, "list-model-profiles")


# -- helpers ------------------------------------------------------------------------------------


def _from_command_line(ctx: typer.Context, name: str) -> bool:
    # By the enum's name: Typer may run on its own vendored copy of click, with its own enum class.
    source = ctx.get_parameter_source(name)
    return source is not None and source.name == "COMMANDLINE"


def _check_nodes(nodes: int | None) -> None:
    if nodes is not None and nodes < 1:
        raise UsageError(
            f"bad --nodes {nodes}: a group has 1 node or more",
            hint="--nodes N plans N identical nodes, each with the GPUs of --gpus (default 1: this one)",
        )


def _dir(profiles_dir: Path | None) -> str | None:
    return None if profiles_dir is None else str(profiles_dir)


def _find(ref: str, profiles_dir: Path | None) -> Manifest:
    from nimctl.profiles import find_manifest

    return find_manifest(ref, profiles_dir=profiles_dir)


def _report(
    ref: str,
    inventory: Any,
    requested: str | None,
    prefer: Prefer,
    lora: bool,
    max_model_len: int | None,
    profiles_dir: Path | None,
    nodes: int = 1,
) -> ProfileReport:
    from nimctl.profiles.report import profile_report

    return profile_report(
        _find(ref, profiles_dir),
        inventory,
        requested=requested,
        prefer=prefer,
        lora=lora,
        max_model_len=max_model_len,
        nodes=nodes,
    )


def _manifest_with_profile(
    ref: str, model: str | None, profiles_dir: Path | None
) -> tuple[Manifest, Profile]:
    """The manifest holding profile ``ref``, and the profile; a name in several manifests needs --model."""
    from nimctl.errors import ManifestError
    from nimctl.profiles import load_manifest, manifest_files

    if model is not None:
        manifest = _find(model, profiles_dir)
        profile = manifest.profile_by_id_or_name(ref)
        if profile is None:
            raise UsageError(
                f"no profile {ref!r} in the {manifest.name} manifest",
                hint=f"its profiles: {', '.join(p.name for p in manifest.profiles)}",
            )
        return manifest, profile
    found = []
    for path in manifest_files(_dir(profiles_dir)):
        try:
            manifest = load_manifest(path)
        except ManifestError:
            continue  # `nimctl profiles list` reports broken manifests; here they just cannot match
        if (profile := manifest.profile_by_id_or_name(ref)) is not None:
            found.append((manifest, profile))
    if not found:
        raise UsageError(
            f"no profile {ref!r} in any manifest", hint="`nimctl profiles list MODEL` shows the ids"
        )
    if len(found) > 1:
        names = ", ".join(m.name for m, _ in found)
        raise UsageError(f"{ref!r} is a profile of several models ({names})", hint="add --model MODEL")
    return found[0]
