"""YAML for generated files: stable (sorted keys, no anchors, no wrapping), one header comment."""

from __future__ import annotations

from typing import Any

import yaml


class _Dumper(yaml.SafeDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True  # the same dict twice (two probes alike) is written twice, never as an anchor


def _multiline(dumper: yaml.SafeDumper, text: str) -> yaml.Node:
    style = "|" if "\n" in text else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", text, style=style)


_Dumper.add_representer(str, _multiline)


def documents(header: str, objects: list[dict[str, Any]]) -> str:
    """``header`` then ``objects`` as YAML documents; keys sorted, so the output is the same
    whatever order the code built them in (apiVersion, kind, metadata, spec read well sorted)."""
    body = "---\n".join(
        yaml.dump(obj, Dumper=_Dumper, sort_keys=True, default_flow_style=False, width=10_000)
        for obj in objects
    )
    return header + body
