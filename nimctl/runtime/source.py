"""nimctl's source tree as image builds see it: where it is and what it needs installed.

Images are built from a source checkout (the Dockerfiles, the manifests and the package
all live there); ``NIMCTL_SOURCE_DIR`` points elsewhere, e.g. at a copy under test.
The Python requirements of an image come from ``pyproject.toml`` itself, so the
image and ``pip install nimctl[cpu]`` can never disagree.
"""

from __future__ import annotations

import os
import re
import sys
import tomllib
from pathlib import Path
from typing import Literal

from nimctl.errors import UsageError

Device = Literal["cpu", "cuda"]
DEVICES: tuple[Device, ...] = ("cpu", "cuda")
# The extras an image installs, per device: the CUDA image's base already has vLLM and torch.
IMAGE_EXTRAS: dict[Device, str] = {"cpu": "cpu", "cuda": "server"}
_SELF_EXTRA = re.compile(r"^nimctl\[(?P<extras>[^\]]+)\]\s*$")


def source_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The checkout holding ``pyproject.toml``, ``container/`` and ``nimctl/``."""
    candidate = explicit or os.environ.get("NIMCTL_SOURCE_DIR") or Path(__file__).resolve().parents[2]
    root = Path(candidate).expanduser().resolve()
    missing = [name for name in ("pyproject.toml", "container", "nimctl") if not (root / name).exists()]
    if missing:
        raise UsageError(
            f"{root} is not a nimctl source tree (missing {', '.join(missing)})",
            hint="building images needs a checkout of nimctl: run from one (pip install -e .) "
            "or set NIMCTL_SOURCE_DIR",
        )
    return root


def _pyproject(root: Path) -> dict[str, object]:
    with (root / "pyproject.toml").open("rb") as handle:
        return tomllib.load(handle)


def requirements(root: Path, extra: str) -> list[str]:
    """The requirement lines of ``nimctl[extra]`` without nimctl itself, plus its build backend.

    The build backend is included because the image installs nimctl's own source last,
    offline, without build isolation.
    """
    data = _pyproject(root)
    project = data.get("project", {})
    assert isinstance(project, dict)
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    if extra not in optional:
        raise UsageError(f"pyproject.toml has no extra {extra!r}")
    lines: list[str] = list(project.get("dependencies", []))
    seen: set[str] = set()

    def add_extra(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        for requirement in optional.get(name, []):
            match = _SELF_EXTRA.match(requirement)
            if match:
                for inner in match.group("extras").split(","):
                    add_extra(inner.strip())
            else:
                lines.append(requirement)

    add_extra(extra)
    build_system = data.get("build-system", {})
    assert isinstance(build_system, dict)
    lines.extend(build_system.get("requires", []))
    unique: list[str] = []
    for line in lines:
        if line not in unique:
            unique.append(line)
    return unique


def requirements_text(root: Path, device: Device) -> str:
    header = f"# nimctl[{IMAGE_EXTRAS[device]}] without nimctl itself, from pyproject.toml\n"
    return header + "\n".join(requirements(root, IMAGE_EXTRAS[device])) + "\n"


def main(argv: list[str] | None = None) -> int:
    """``python -m nimctl.runtime.source cpu``: print the requirements (scripts/build-images.sh)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or args[0] not in DEVICES:
        sys.stderr.write("usage: python -m nimctl.runtime.source cpu|cuda\n")
        return 2
    sys.stdout.write(requirements_text(source_dir(), args[0]))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
