"""The helm-values target: values for NVIDIA's nim-llm chart."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from nimctl.errors import UsageError
from nimctl.generate import render
from nimctl.generate.plan import Request, plan


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("NIMCTL_ASSUME_GPUS", "NIMCTL_PROFILE_PREFERENCE", "NIM_MODEL_PROFILE"):
        monkeypatch.delenv(key, raising=False)


def values(**options: Any) -> dict[str, Any]:
    [(name, text)] = render("helm-values", plan(Request(**options)))
    assert name == "values.yaml"
    return yaml.safe_load(text)


def test_values() -> None:
    found = values(model="qwen2.5-vl-7b-instruct", assume_gpus="H100-80GB:1")
    assert found["image"] == {
        "repository": "nimctl/nim-cuda",
        "tag": found["image"]["tag"],
        "pullPolicy": "IfNotPresent",
    }
    assert found["model"]["name"] == "qwen/qwen2.5-vl-7b-instruct"  # the served name
    assert found["model"]["nimCache"] == "/opt/nim/.cache"
    assert "ngcAPISecret" not in found["model"]  # a hub model: the chart's NGC reference is not optional
    assert found["persistence"] == {"enabled": True, "size": "20Gi", "accessMode": "ReadWriteOnce"}
    assert found["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert found["podSecurityContext"]["runAsUser"] == 1000
    assert found["startupProbe"]["path"] == "/v1/health/ready"
    env = {e["name"]: e for e in found["env"]}
    assert env["NIM_MODEL_PROFILE"]["value"]
    assert (
        env["NIMCTL_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "nimctl-qwen2-5-vl-7b-instruct-secrets"
    )


def test_engine_arguments_are_custom_args() -> None:
    found = values(model="tiny-vlm", assume_gpus="none", engine_args=("--enforce-eager",))
    assert found["customArgs"] == ["--enforce-eager"]
    assert "resources" not in found


def test_group_is_refused() -> None:
    with pytest.raises(UsageError, match="helm-values cannot express --nodes 2"):
        render("helm-values", plan(Request(model="tiny-vlm", assume_gpus="none", nodes=2)))
