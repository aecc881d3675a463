"""What ``nimctl doctor`` finds: one :class:`Check` per item, and the :class:`Report` of them all."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Verdict(StrEnum):
    """ok: fine; warn: may work, or works with a cost (it fails nothing); fail: `nimctl run` will not
    work until it is fixed; skip: does not apply to this run (no GPU profile, a host process...)."""

    ok = "ok"
    warn = "warn"
    fail = "fail"
    skip = "skip"


@dataclass(frozen=True)
class Check:
    """One item: ``name`` is its stable key (JSON), ``title`` what it checks, ``detail`` what was
    found, ``hint`` the fix (for warn and fail), ``data`` the figures behind it for scripts."""

    name: str
    title: str
    verdict: Verdict
    detail: str
    hint: str | None = None
    data: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "title": self.title,
            "verdict": self.verdict.value,
            "detail": self.detail,
            "hint": self.hint,
            "data": self.data,
        }


@dataclass
class Report:
    """Every check, in the order they are shown; ``model`` None: the machine only."""

    model: str | None
    runtime: str | None  # the runtime `nimctl run` would use here (docker, local)
    checks: list[Check] = field(default_factory=list)

    @property
    def failed(self) -> list[Check]:
        return [check for check in self.checks if check.verdict is Verdict.fail]

    @property
    def ok(self) -> bool:
        return not self.failed

    def counts(self) -> dict[str, int]:
        return {verdict.value: sum(c.verdict is verdict for c in self.checks) for verdict in Verdict}

    def check(self, name: str) -> Check:
        return next(check for check in self.checks if check.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "runtime": self.runtime,
            "ok": self.ok,
            "counts": self.counts(),
            "checks": [check.to_dict() for check in self.checks],
        }
