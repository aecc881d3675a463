"""The Compose target: what run's container becomes in a Compose file."""

from __future__ import annotations

from pathlib import Path
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


def service(**options: Any) -> tuple[dict[str, Any], str]:
    options.setdefault("cache", Path("/srv/nim-cache"))
    [(name, text)] = render("compose", plan(Request(**options)))
    assert name == "docker-compose.yaml"
    compose = yaml.safe_load(text)
    assert "version" not in compose  # the Compose Specification: docker-compose 1.27+ and v2
    [svc] = compose["services"].values()
    return svc, text


def test_gpu_profile_reserves_the_profile_s_gpus() -> None:
    svc, _ = service(model="qwen2.5-vl-72b-instruct", assume_gpus="H100-80GB:8")
    [device] = svc["deploy"]["resources"]["reservations"]["devices"]
    assert device == {"driver": "nvidia", "count": 2, "capabilities": ["gpu"]}  # tp2, not all 8
    assert svc["shm_size"] == "16g"  # run's: multi-GPU needs a large /dev/shm


def test_cpu_profile_reserves_no_gpu() -> None:
    svc, _ = service(model="tiny-vlm", assume_gpus="none")
    assert "deploy" not in svc
    assert svc["shm_size"] == "1g"
    assert svc["image"].startswith("nimctl/nim-cpu:")


def test_run_s_container_settings() -> None:
    svc, _ = service(model="tiny-vlm", assume_gpus="none")
    assert svc["cap_drop"] == ["ALL"]
    assert svc["security_opt"] == ["no-new-privileges"]
    assert svc["ports"] == ["127.0.0.1:8000:8000"]
    assert svc["volumes"] == ["/srv/nim-cache:/opt/nim/.cache"]
    assert svc["restart"] == "no"
    assert svc["environment"]["NIM_MODEL_PROFILE"]  # pinned
    test = svc["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python3", "-c"] and "/v1/health/ready" in test[3]
    assert "$" not in test[3]  # Compose would interpolate it


def test_host_port_and_ipv6() -> None:
    svc, _ = service(model="tiny-vlm", assume_gpus="none", port=9000, host="::1")
    assert svc["ports"] == ["[::1]:9000:8000"]


def test_credentials_are_secret_files() -> None:
    svc, text = service(model="qwen2.5-vl-7b-instruct", assume_gpus="H100-80GB:1")
    compose = yaml.safe_load(text)
    assert compose["secrets"] == {
        "api_keys": {"file": "secrets/api-keys"},
        "hf_token": {"file": "secrets/hf-token"},
    }
    targets = {s["source"]: s["target"] for s in svc["secrets"]}
    assert svc["environment"]["NIMCTL_API_KEY_FILE"] == targets["api_keys"]
    assert svc["environment"]["HF_TOKEN_PATH"] == targets["hf_token"]
    assert "HF_TOKEN" not in svc["environment"]
    assert "# Before `docker-compose up`, create these files" in text


def test_other_credentials_come_from_an_env_file() -> None:
    svc, text = service(model="tiny-vlm", assume_gpus="none", env=("MY_SERVICE_TOKEN=abc123",))
    assert svc["env_file"] == ["secrets/nimctl-tiny-vlm.env"]
    assert "abc123" not in text and "MY_SERVICE_TOKEN" not in svc["environment"]


def test_no_auth_has_no_secrets() -> None:
    svc, text = service(model="tiny-vlm", assume_gpus="none", no_auth=True)
    assert "secrets" not in svc and "secrets" not in yaml.safe_load(text)


def test_tls_health_check_speaks_https() -> None:
    svc, _ = service(model="tiny-vlm", assume_gpus="none", tls=True)
    assert "https://127.0.0.1:8000/v1/health/ready" in svc["healthcheck"]["test"][3]
    assert {s["source"] for s in svc["secrets"]} == {"api_keys", "ca_crt", "server_crt", "server_key"}


def test_lora_dir_is_mounted_read_only(tmp_path: Path) -> None:
    svc, _ = service(model="tiny-llm", assume_gpus="none", lora_dir=tmp_path)
    assert f"{tmp_path}:/opt/nim/loras:ro" in svc["volumes"]


def test_group_is_refused() -> None:
    with pytest.raises(UsageError, match="compose cannot express --nodes 2") as caught:
        render("compose", plan(Request(model="tiny-vlm", assume_gpus="none", nodes=2)))
    assert "lws" in (caught.value.hint or "")
