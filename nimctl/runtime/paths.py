"""Where nimctl keeps its own files on the host: state (instances, build logs) and the model cache."""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """``$NIMCTL_STATE_DIR``, else ``$XDG_STATE_HOME/nimctl``, else ``~/.local/state/nimctl``."""
    explicit = os.environ.get("NIMCTL_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "nimctl"


def build_logs_dir() -> Path:
    return state_dir() / "builds"


def instances_dir() -> Path:
    """One folder per local (host process) instance."""
    return state_dir() / "instances"
