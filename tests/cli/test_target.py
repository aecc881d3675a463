"""Where the client commands talk to when no URL is given."""

from __future__ import annotations

import pytest

from nimctl.cli import _target
from nimctl.client import DEFAULT_URL
from nimctl.errors import RuntimeUnavailableError, UsageError


@pytest.fixture
def running(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    urls: list[str] = []
    monkeypatch.setattr("nimctl.runtime.manage.running_instance_urls", lambda limit=3: list(urls)[:limit])
    return urls


def test_an_explicit_url_wins(running: list[str]) -> None:
    running.append("http://127.0.0.1:9001")
    assert _target.resolve_url("http://h:1") == "http://h:1"


def test_the_one_running_instance_else_the_default(running: list[str]) -> None:
    assert _target.resolve_url(None) == DEFAULT_URL
    running.append("http://127.0.0.1:9001")
    assert _target.resolve_url(None) == "http://127.0.0.1:9001"


def test_several_running_instances_ask_for_a_url(running: list[str]) -> None:
    running.extend(["http://127.0.0.1:9001", "http://127.0.0.1:9002"])
    with pytest.raises(UsageError, match="several nimctl instances are running") as info:
        _target.resolve_url(None)
    assert info.value.hint and "--url" in info.value.hint


def test_no_runtime_to_ask_falls_back_to_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(limit: int = 3) -> list[str]:
        raise RuntimeUnavailableError("no docker")

    monkeypatch.setattr("nimctl.runtime.manage.running_instance_urls", unavailable)
    assert _target.resolve_url(None) == DEFAULT_URL
