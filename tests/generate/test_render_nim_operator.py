"""The nim-operator target: a NIMCache and a NIMService, and what their CRDs cannot express."""

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


def documents(**options: Any) -> dict[str, dict[str, Any]]:
    [(name, text)] = render("nim-operator", plan(Request(**options)))
    assert name == "nim-operator.yaml"
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text)}


def test_cache_from_the_hub_and_service_pinning_the_profile() -> None:
    found = documents(model="qwen2.5-vl-7b-instruct", assume_gpus="H100-80GB:1")
    cache, service = found["NIMCache"], found["NIMService"]
    assert cache["apiVersion"] == service["apiVersion"] == "apps.nvidia.com/v1alpha1"
    hf = cache["spec"]["source"]["hf"]
    assert (hf["endpoint"], hf["namespace"], hf["modelName"]) == (
        "https://huggingface.co",
        "Qwen",
        "Qwen2.5-VL-7B-Instruct",
    )
    assert cache["spec"]["storage"]["pvc"]["size"] == "20Gi"
    spec = service["spec"]
    profile = service["metadata"]["annotations"]["ai.nimctl.profile"]
    assert spec["storage"]["nimCache"] == {"name": cache["metadata"]["name"], "profile": profile}
    env = {e["name"]: e for e in spec["env"]}
    assert env["NIM_MODEL_PROFILE"]["value"] == profile
    # No credentials folder to mount: the key comes from the Secret through a variable.
    assert "NIMCTL_API_KEY_FILE" not in env
    assert env["NIMCTL_API_KEY"]["valueFrom"]["secretKeyRef"]["key"] == "NIMCTL_API_KEY"
    assert spec["resources"] == {"limits": {"nvidia.com/gpu": 1}}
    assert spec["image"]["repository"] == "nimctl/nim-cuda"
    assert spec["startupProbe"]["enabled"] is True
    assert spec["startupProbe"]["probe"]["httpGet"] == {
        "path": "/v1/health/ready",
        "port": 8000,
        "scheme": "HTTP",
    }


def test_revision_is_kept() -> None:
    hf = documents(model="hf://Qwen/Qwen2.5-VL-7B-Instruct@main", assume_gpus="H100-80GB:1")["NIMCache"]
    assert hf["spec"]["source"]["hf"]["revision"] == "main"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model": "tiny-vlm", "assume_gpus": "none"}, "cannot cache builtin://tiny-vlm"),
        ({"model": "qwen2.5-vl-72b-instruct", "assume_gpus": "L40S:8", "nodes": 2}, "--nodes 2"),
        ({"model": "qwen2.5-vl-7b-instruct", "assume_gpus": "H100-80GB:1", "tls": True}, "TLS files"),
    ],
)
def test_what_the_crds_cannot_express_is_refused(options: dict[str, Any], message: str) -> None:
    with pytest.raises(UsageError, match=message) as caught:
        render("nim-operator", plan(Request(**options)))
    assert caught.value.hint
