"""``nimctl generate``: deployment files for the NIM ``nimctl run`` would start.

:func:`~nimctl.generate.plan.plan` turns run's options into one
:class:`~nimctl.generate.deployment.Deployment`; :func:`render` spells it for a target, as
``(file name, YAML text)`` pairs. No Typer here: the command is :mod:`nimctl.cli.generate`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from nimctl.errors import UsageError

if TYPE_CHECKING:
    from nimctl.generate.deployment import Deployment

# Target -> the module of nimctl.generate whose render() spells it, in the order of the help.
TARGETS: dict[str, str] = {
    "compose": "compose",
    "kube": "kube",
    "lws": "lws",
    "nim-operator": "nim_operator",
    "helm-values": "helm_values",
}


def render(target: str, deployment: Deployment, **options: Any) -> list[tuple[str, str]]:
    """The files of ``target`` for ``deployment``; ``options`` are the target's own (kube's
    ``cache_per_replica``), ignored by the targets that have none."""
    if target not in TARGETS:
        raise UsageError(f"unknown target {target!r}", hint=f"use one of: {', '.join(TARGETS)}")
    module = importlib.import_module(f"nimctl.generate.{TARGETS[target]}")
    accepted = {key: value for key, value in options.items() if key in getattr(module, "OPTIONS", ())}
    return list(module.render(deployment, **accepted))


def as_stream(files: list[tuple[str, str]]) -> str:
    """Several files as one multi-document YAML stream (``-o -``: ``kubectl apply -f -``)."""
    return "---\n".join(text for _, text in files)
