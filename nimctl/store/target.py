"""What ``nimctl pull`` (and NIM's ``download-to-cache``) fetch for a MODEL argument.

MODEL is what ``nimctl run`` takes: a manifest name or file, ``hf://ORG/NAME[@REV]``,
``builtin://NAME`` or a local folder, resolved by the same function ``run`` uses. With a
manifest, the profile is chosen as ``run`` would choose it (``--profile``, ``--gpus``), and the
pull says which profile the files serve, or why none would run here; every profile of a nimctl
manifest reads the model's one source, so the files are the same for all and are fetched anyway.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from nimctl.errors import ProfileError, UsageError
from nimctl.store.pull import PullResult, pull
from nimctl.store.source import HF_SCHEME, ModelSource, parse_model_source

if TYPE_CHECKING:
    from nimctl.gpu.inventory import Inventory
    from nimctl.profiles.schema import Manifest, Profile
    from nimctl.store.progress import ProgressListener


@dataclass(frozen=True)
class PullTarget:
    source: ModelSource
    revision: str | None
    manifest: Manifest | None
    profile: Profile | None  # pinned, or the one run would choose here
    note: str | None = None  # why that profile would not run here, or why none would


def pull_target(
    model: str,
    *,
    revision: str | None = None,
    profile: str | None = None,
    inventory: Inventory | None = None,
    prefer: str = "throughput",
) -> PullTarget:
    """What to fetch for ``model``; the profile is chosen for ``inventory`` (default: this machine's
    GPUs; ``nimctl pull --gpus`` narrows them as ``run --gpus`` does)."""
    from nimctl.gpu import detect_inventory
    from nimctl.profiles.selection import parse_preference, select_profile

    manifest, source = resolve_source(model)
    if source.kind == "local":
        raise UsageError(
            f"{model} is a local folder: there is nothing to pull",
            hint="nimctl run serves a folder as it is; pull takes a manifest name or hf://ORG/NAME",
        )
    if revision and source.revision and revision != source.revision:
        raise UsageError(f"{model} names revision {source.revision}, and --revision says {revision}")
    chosen = note = None
    if manifest is not None:
        if profile is not None:
            chosen = named_profile(manifest, profile)
        inventory = inventory if inventory is not None else detect_inventory()
        # A machine that fetches for another (the connected side of an air gap) need not run it:
        # every profile reads the same files, so what would not run here is a note, not an error.
        try:
            chosen = select_profile(manifest, inventory, profile, parse_preference(prefer)).profile
        except ProfileError as exc:
            note = f"{exc.message}; the files are the same for every profile and are fetched all the same"
    elif profile is not None:
        raise UsageError(f"--profile {profile}: {model} has no manifest, so no profiles")
    return PullTarget(source, revision or source.revision, manifest, chosen, note)


def named_profile(manifest: Manifest, ref: str) -> Profile:
    """The profile ``ref`` names (an id, an id prefix or a name), runnable here or not: a cache may be
    filled for another machine. A ProfileError listing the manifest's profiles when none matches."""
    profile = manifest.profile_by_id_or_name(ref)
    if profile is None:
        names = ", ".join(f"{p.name} ({p.id[:12]})" for p in manifest.profiles)
        raise ProfileError(
            f"profile {ref!r} is not in the {manifest.name} manifest ({manifest.path})",
            hint=f"its profiles: {names}; `nimctl profiles list {manifest.name}` shows the full ids",
        )
    return profile


def resolve_source(model: str) -> tuple[Manifest | None, ModelSource]:
    """What a MODEL argument names: its manifest, if any, and the source its files come from.

    A local folder is itself; else a manifest name or file, or a source URI a manifest lists; a
    URI no manifest lists stands alone (NIM's model-free mode). ``nimctl run`` resolves with this
    too (:func:`nimctl.runtime.spec.resolve_model`). An ``hf://ORG/NAME@REV`` keeps its revision
    even when a manifest names that model.
    """
    from nimctl.profiles import find_manifest

    path = Path(model).expanduser()
    if path.is_dir():
        return None, parse_model_source(str(path.resolve()))
    try:
        manifest = find_manifest(model)
    except UsageError:
        if "://" in model:
            return None, parse_model_source(model)
        raise
    return manifest, parse_model_source(model if model.startswith(HF_SCHEME) else manifest.model.source)


def pull_model(target: PullTarget, cache: Path, *, on_progress: ProgressListener | None = None) -> PullResult:
    """Fetch ``target`` into ``cache``: a hub model through :func:`~nimctl.store.pull.pull`, a
    built-in one by generating it (the same call the server makes)."""
    source = target.source
    if source.kind == "hf":
        return pull(source.name, cache, revision=target.revision, on_progress=on_progress)
    folder = source.fetch(cache)
    files = [path for path in folder.rglob("*") if path.is_file()]
    return PullResult(
        uri=source.uri,
        repo=source.name,
        revision=None,
        commit=None,
        folder=folder,
        size_bytes=sum(path.stat().st_size for path in files),
        files=len(files),
        fetched_bytes=0,
    )
