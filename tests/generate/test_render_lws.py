"""The lws target: a multi-node profile as a LeaderWorkerSet with nim-serve's roles."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from nimctl import contract
from nimctl.errors import UsageError
from nimctl.generate import render
from nimctl.generate.plan import Request, plan


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key in ("NIMCTL_ASSUME_GPUS", "NIMCTL_PROFILE_PREFERENCE", "NIM_MODEL_PROFILE"):
        monkeypatch.delenv(key, raising=False)


def documents(**options: Any) -> dict[str, dict[str, Any]]:
    [(name, text)] = render("lws", plan(Request(**options)))
    assert name == "lws.yaml"
    return {doc["kind"]: doc for doc in yaml.safe_load_all(text)}


def qwen72b_two_nodes() -> dict[str, dict[str, Any]]:
    return documents(model="qwen2.5-vl-72b-instruct", assume_gpus="L40S:8", nodes=2)


def main(template: dict[str, Any]) -> dict[str, Any]:
    [container] = template["spec"]["containers"]
    return container


def test_group_size_is_the_profile_s_nodes() -> None:
    found = qwen72b_two_nodes()
    lws = found["LeaderWorkerSet"]
    assert lws["apiVersion"] == "leaderworkerset.x-k8s.io/v1"
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 2
    assert template["restartPolicy"] == "RecreateGroupOnPodRestart"
    assert lws["metadata"]["annotations"]["ai.nimctl.profile-name"].endswith("-2node")
    for role in ("leaderTemplate", "workerTemplate"):
        assert main(template[role])["resources"] == {"limits": {"nvidia.com/gpu": 4}}  # per node


def test_members_get_the_group_s_variables() -> None:
    template = qwen72b_two_nodes()["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]
    for role in ("leaderTemplate", "workerTemplate"):
        env = main(template[role])["env"]
        names = [e["name"] for e in env]
        assert len(names) == len(set(names))
        by_name = {e["name"]: e for e in env}
        assert by_name[contract.NUM_COMPUTE_NODES]["value"] == "2"
        assert by_name[contract.NODE_RANK]["valueFrom"]["fieldRef"]["fieldPath"] == (
            "metadata.labels['leaderworkerset.sigs.k8s.io/worker-index']"
        )
        assert by_name[contract.LEADER_ADDRESS]["value"] == "$(LWS_LEADER_ADDRESS)"
        assert by_name[contract.LEADER_PORT]["value"] == str(contract.DEFAULT_LEADER_PORT)
        assert by_name[contract.MODEL_PROFILE]["value"]
        # Each pod's own IP: the leader need not resolve its own DNS name (not yet published when
        # it starts) and each engine advertises an address the others reach.
        assert by_name[contract.NODE_ADDRESS] == {
            "name": contract.NODE_ADDRESS,
            "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
        }


def test_leader_is_probed_as_a_nim_and_workers_for_liveness() -> None:
    template = qwen72b_two_nodes()["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]
    leader, worker = main(template["leaderTemplate"]), main(template["workerTemplate"])
    assert {"livenessProbe", "readinessProbe", "startupProbe"} <= set(leader)
    assert worker["livenessProbe"]["httpGet"]["path"] == "/v1/health/live"
    assert "readinessProbe" not in worker and "startupProbe" not in worker
    ports = {p["name"]: p["containerPort"] for p in leader["ports"]}
    assert ports == {"http": 8000, "join": 29500, "engine-store": 29501}


def test_each_pod_claims_its_cache_and_the_service_selects_the_leader() -> None:
    found = qwen72b_two_nodes()
    template = found["LeaderWorkerSet"]["spec"]["leaderWorkerTemplate"]
    assert [c["metadata"]["name"] for c in template["volumeClaimTemplates"]] == ["nim-cache"]
    assert "nim-cache" not in {v["name"] for v in template["leaderTemplate"]["spec"]["volumes"]}
    assert found["Service"]["spec"]["selector"]["ai.nimctl.role"] == "leader"
    assert template["leaderTemplate"]["metadata"]["labels"]["ai.nimctl.role"] == "leader"


def test_the_api_service_is_not_named_like_the_leaderworkerset() -> None:
    # The LWS controller creates its own headless Service named exactly like the LeaderWorkerSet
    # (the pods' subdomain: LWS_LEADER_ADDRESS = NAME-0.NAME.NAMESPACE) and does nothing when a
    # Service of that name exists already; ours by that name would leave the leader's address
    # unresolvable, so the API Service must be named otherwise.
    found = qwen72b_two_nodes()
    lws_name = found["LeaderWorkerSet"]["metadata"]["name"]
    assert found["Service"]["metadata"]["name"] != lws_name
    assert found["Service"]["metadata"]["name"] == f"{lws_name}-api"


@pytest.mark.parametrize("name", ["x" * 63, "x" * 59 + "-api", "nimctl-qwen"])
def test_the_api_service_name_is_a_label_unlike_the_lws_s_whatever_the_name(name: str) -> None:
    found = documents(model="tiny-vlm", assume_gpus="none", nodes=2, name=name)
    lws_name = found["LeaderWorkerSet"]["metadata"]["name"]
    service_name = found["Service"]["metadata"]["name"]
    assert service_name != lws_name
    assert len(service_name) <= 63 and not service_name.endswith("-")


def test_cpu_group() -> None:
    template = documents(model="tiny-vlm", assume_gpus="none", nodes=2)["LeaderWorkerSet"]["spec"]
    assert "resources" not in main(template["leaderWorkerTemplate"]["workerTemplate"])


def test_one_node_is_refused() -> None:
    with pytest.raises(UsageError, match="lws describes a multi-node group") as caught:
        render("lws", plan(Request(model="qwen2.5-vl-72b-instruct", assume_gpus="H100-80GB:8")))
    assert "--nodes" in (caught.value.hint or "")
