"""``nimctl generate lws``: a multi-node profile as a LeaderWorkerSet (leaderworkerset.x-k8s.io/v1).

One group of ``size`` = the profile's nodes: the leader (rank 0) serves the API, the workers
serve probes only (docs/multinode.md). Every pod gets the group's variables from
:func:`nimctl.contract.node_environment` where they are static; the rank comes from the
worker-index label LeaderWorkerSet puts on each pod, the leader's address from the
``LWS_LEADER_ADDRESS`` it injects (listed first, so Kubernetes expands it in what follows) and
each pod's own address from its pod IP. Each pod claims a cache of its own: a worker fetches
the model itself.

The API Service is ``NAME-api``, never ``NAME``: the LeaderWorkerSet controller creates the
headless Service named like the LeaderWorkerSet (the pods' subdomain, which makes
``LWS_LEADER_ADDRESS`` = ``NAME-0.NAME.NAMESPACE`` resolve) and leaves it alone when a Service
of that name already exists, so one of ours by that name would break the leader's DNS.
"""

from __future__ import annotations

from typing import Any

from nimctl import contract
from nimctl.errors import UsageError
from nimctl.generate._yaml import documents
from nimctl.generate.deployment import LIVE_PATH, Deployment
from nimctl.generate.kube import (
    CACHE_VOLUME,
    annotations,
    claim,
    container,
    kube_object,
    labels,
    pod_spec,
    probe,
    probes,
    refuse_host_volumes,
    refuse_idle_stop,
    selector,
    service,
)

WORKER_INDEX_LABEL = "leaderworkerset.sigs.k8s.io/worker-index"
ROLE_LABEL = "ai.nimctl.role"  # our own: the Service selects the leader by it


def render(deployment: Deployment) -> list[tuple[str, str]]:
    d = deployment
    if d.nodes < 2:
        raise UsageError(
            "lws describes a multi-node group, and the request is for one node"
            + (f" (profile {d.profile_name})" if d.profile_name else ""),
            hint="give --nodes N with a profile that spans N nodes (nimctl profiles list MODEL --gpus SPEC "
            "--nodes 2), or use kube for one node",
        )
    refuse_host_volumes(d, "lws")
    refuse_idle_stop(d, "lws")
    spec = {
        "replicas": 1,
        # The workers are created once the leader pod exists: they need its address.
        "startupPolicy": "LeaderCreated",
        "leaderWorkerTemplate": {
            "size": d.nodes,
            # nimctl's group fails fast: a lost member ends the others; LWS recreates the group.
            "restartPolicy": "RecreateGroupOnPodRestart",
            "leaderTemplate": _template(d, leader=True),
            "workerTemplate": _template(d, leader=False),
            "volumeClaimTemplates": [claim(d, CACHE_VOLUME, template=True)],
        },
    }
    api = service(d, selector(d) | {ROLE_LABEL: "leader"})  # the API is the leader's only
    # Not named d.name: that is the headless Service LeaderWorkerSet creates (module docstring).
    api["metadata"]["name"] = api_service_name(d)
    objects = [kube_object("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", d, spec), api]
    return [("lws.yaml", documents(d.header("lws"), objects))]


def api_service_name(d: Deployment) -> str:
    """``NAME-api``, a DNS label (63 at most) that is never the LeaderWorkerSet's own name."""
    name = f"{d.name[:59].rstrip('-')}-api"
    # Only a 63-character NAME that ends in -api truncates to itself; such a NAME cannot end in -http.
    return name if name != d.name else f"{d.name[:58].rstrip('-')}-http"


def group_env(d: Deployment) -> list[dict[str, Any]]:
    """The variables that make a pod a member: the static ones from node_environment(), the rank
    from the pod's label, the leader's address from LeaderWorkerSet's own variable and the pod's
    own address from its IP (the leader need not resolve its own DNS name, whose record may not
    be published yet when it starts, and each engine advertises its pod IP)."""
    static = contract.node_environment(d.nodes, 0, "$(LWS_LEADER_ADDRESS)")
    env: list[dict[str, Any]] = []
    for key, value in static.items():
        if key == contract.NODE_RANK:
            field = {"fieldPath": f"metadata.labels['{WORKER_INDEX_LABEL}']"}
            env.append({"name": key, "valueFrom": {"fieldRef": field}})
        else:
            env.append({"name": key, "value": value})
    env.append({"name": contract.NODE_ADDRESS, "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}})
    return env


def _template(d: Deployment, *, leader: bool) -> dict[str, Any]:
    role = "leader" if leader else "worker"
    # The leader is probed as a single-node NIM (ready once every worker joined and the model is
    # loaded); a worker's port answers live while it runs, which is all its liveness needs.
    checks = probes(d) if leader else {"livenessProbe": probe(d, LIVE_PATH)}
    main = container(d, env_extra=group_env(d), with_probes=checks)
    main["ports"] = (
        main["ports"]
        + [
            {"name": "join", "containerPort": contract.DEFAULT_LEADER_PORT, "protocol": "TCP"},
            {
                "name": "engine-store",
                "containerPort": contract.DEFAULT_LEADER_PORT + contract.ENGINE_MASTER_PORT_OFFSET,
                "protocol": "TCP",
            },
        ]
        if leader
        else main["ports"]
    )
    spec = pod_spec(d, main)
    # The cache is each pod's claim (volumeClaimTemplates), mounted by the same name.
    spec["volumes"] = [v for v in spec["volumes"] if v["name"] != CACHE_VOLUME]
    return {
        "metadata": {"labels": labels(d) | {ROLE_LABEL: role}, "annotations": annotations(d)},
        "spec": spec,
    }
