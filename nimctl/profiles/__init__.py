"""Model manifests, memory estimates, classification and profile selection.

The public API, used by the CLI (``nimctl profiles``) and by the server (``nim-serve``)::

    manifest = find_manifest("tiny-vlm")            # or a path, or "builtin://tiny-vlm"
    selection = select_profile(manifest, detect_inventory())
    selection.profile.engine_args, selection.reason
"""

from __future__ import annotations

from nimctl.profiles.classify import Classified, classify
from nimctl.profiles.loader import find_manifest, load_manifest, manifest_files, search_path
from nimctl.profiles.memory import MemoryEstimate, estimate
from nimctl.profiles.schema import License, Manifest, ModelInfo, Profile, profile_name
from nimctl.profiles.selection import Selection, select_profile

__all__ = [
    "Classified",
    "License",
    "Manifest",
    "MemoryEstimate",
    "ModelInfo",
    "Profile",
    "Selection",
    "classify",
    "estimate",
    "find_manifest",
    "load_manifest",
    "manifest_files",
    "profile_name",
    "search_path",
    "select_profile",
]
