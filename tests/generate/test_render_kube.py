"""The kube target: Deployment or StatefulSet, Service, PVC, and the pod run's options make."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nimctl.errors import UsageError
from nimctl.generate import render
from nimctl.generate.deployment import startup_budget_s
from nimctl.generate.plan import Request, plan


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("NIMCTL_ASSUME_GPUS", "NIMCTL_PROFILE_PREFERENCE", "NIM_MODEL_PROFILE"):
        monkeypatch.delenv(key, raising=False)


def objects(cache_per_replica: bool = False, **options: Any) -> dict[str, dict[str, Any]]:
    [(name, text)] = render("kube", plan(Request(**options)), cache_per_replica=cache_per_replica)
    assert name == "kube.yaml"
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text)}


def pod(found: dict[str, dict[str, Any]]) -> dict[str, Any]:
    workload = found.get("Deployment") or found["StatefulSet"]
    return workload["spec"]["template"]["spec"]


def test_deployment_with_a_shared_claim() -> None:
    found = objects(model="qwen2.5-vl-7b-instruct", assume_gpus="H100-80GB:1")
    assert set(found) == {"Deployment", "PersistentVolumeClaim", "Service"}
    assert found["Deployment"]["spec"]["strategy"] == {"type": "Recreate"}  # one RWO claim
    claim = found["PersistentVolumeClaim"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "20Gi"  # 8.3 B x 2 bytes x 1.25
    volumes = {v["name"]: v for v in pod(found)["volumes"]}
    assert volumes["nim-cache"]["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]


def test_statefulset_when_the_cache_is_per_replica() -> None:
    found = objects(cache_per_replica=True, model="qwen2.5-vl-7b-instruct", assume_gpus="H100-80GB:1")
    assert set(found) == {"StatefulSet", "Service"}
    sts = found["StatefulSet"]["spec"]
    assert [t["metadata"]["name"] for t in sts["volumeClaimTemplates"]] == ["nim-cache"]
    assert "nim-cache" not in {v["name"] for v in pod(found)["volumes"]}


def test_container_of_a_gpu_profile() -> None:
    found = objects(model="qwen2.5-vl-72b-instruct", assume_gpus="H100-80GB:8")
    [main] = pod(found)["containers"]
    assert main["resources"] == {"limits": {"nvidia.com/gpu": 2}}
    env = {e["name"]: e for e in main["env"]}
    assert (
        env["NIM_MODEL_PROFILE"]["value"]
        == found["Deployment"]["metadata"]["annotations"]["ai.nimctl.profile"]
    )
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "nimctl-qwen2-5-vl-72b-instruct-secrets",
        "key": "HF_TOKEN",
        "optional": True,
    }
    volumes = {v["name"]: v for v in pod(found)["volumes"]}
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}


def test_probes() -> None:
    [main] = pod(objects(model="qwen2.5-vl-72b-instruct", assume_gpus="H100-80GB:8"))["containers"]
    assert main["livenessProbe"]["httpGet"]["path"] == "/v1/health/live"
    assert main["readinessProbe"]["httpGet"]["path"] == "/v1/health/ready"
    startup = main["startupProbe"]
    assert startup["httpGet"]["path"] == "/v1/health/ready"
    # 600 s + 30 s per GiB of fp8 weights (73.4 B parameters, 68.4 GiB): 2651 s, in 10 s periods.
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 2651
    assert startup["failureThreshold"] == 266


def test_startup_budget_has_a_floor_and_grows_with_the_weights() -> None:
    assert startup_budget_s(None, None) == 1800
    small = plan(Request(model="tiny-vlm", assume_gpus="none"))
    assert small.startup_budget_s == 1800  # nimctl run's default wait
    big = plan(
        Request(model="qwen2.5-vl-72b-instruct", assume_gpus="H100-80GB:8", profile="vllm-bf16-tp8-pp1")
    )
    assert big.startup_budget_s > 4000  # bf16: twice the fp8 weights


def test_security_context() -> None:
    spec = pod(objects(model="tiny-vlm", assume_gpus="none"))
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] == 1000
    [main] = spec["containers"]
    assert main["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }
    # What the server writes besides the cache: /tmp and $HOME, emptyDirs.
    assert {m["mountPath"] for m in main["volumeMounts"]} >= {
        "/tmp",
        "/opt/nim/home",
        "/dev/shm",
        "/opt/nim/.cache",
    }
    assert "resources" not in main  # a CPU profile asks for no GPU


def test_credentials_folder_is_a_secret_volume() -> None:
    spec = pod(objects(model="tiny-vlm", assume_gpus="none", mtls=True))
    [main] = spec["containers"]
    env = {e["name"]: e.get("value") for e in main["env"]}
    assert env["NIMCTL_API_KEY_FILE"] == "/run/nimctl/api-keys"
    assert env["NIM_SSL_MODE"] == "MTLS"
    secret = {v["name"]: v for v in spec["volumes"]}["credentials"]["secret"]
    assert [item["key"] for item in secret["items"]] == ["api-keys", "ca.crt", "server.crt", "server.key"]
    assert main["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"


def test_service_port_is_run_s_port() -> None:
    service = objects(model="tiny-vlm", assume_gpus="none", port=9000)["Service"]
    assert service["spec"]["ports"][0]["port"] == 9000
    assert service["spec"]["ports"][0]["targetPort"] == "http"


def test_names_are_dns_labels() -> None:
    found = objects(model="qwen2.5-vl-7b-instruct", assume_gpus="H100-80GB:1")
    assert found["Service"]["metadata"]["name"] == "nimctl-qwen2-5-vl-7b-instruct"


def test_host_folders_are_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="a cluster has no host folder"):
        objects(model="tiny-llm", assume_gpus="none", lora_dir=tmp_path)
