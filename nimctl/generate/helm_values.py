"""``nimctl generate helm-values``: values for NVIDIA's nim-llm Helm chart.

Written to the chart's last published schema (1.1.2, NVIDIA/nim-deploy): the image, the model's
served name, the environment (credentials as ``secretKeyRef``), the cache's persistence, the GPU
limit, the probes and the pod's uid. The chart mounts no Secret as files, so the API key comes
from ``NIMCTL_API_KEY`` and TLS is refused; its ``multiNode`` runs NIM's MPI/Ray launcher, not
nim-serve's roles, so ``--nodes`` is refused (use lws). The chart passes ``NGC_API_KEY`` from
``model.ngcAPISecret`` itself (named only for an ``ngc://`` model: the chart's reference is not
optional).
"""

from __future__ import annotations

from typing import Any

from nimctl import contract
from nimctl.generate._yaml import documents
from nimctl.generate.deployment import (
    IMAGE_GID,
    IMAGE_UID,
    LIVE_PATH,
    PROBE_PERIOD_S,
    READY_PATH,
    Deployment,
    keyed_by_env,
    split_image,
)
from nimctl.generate.kube import env_list, refuse_group, refuse_host_volumes, refuse_idle_stop


def render(deployment: Deployment) -> list[tuple[str, str]]:
    refuse_group(deployment, "helm-values", "lws")
    refuse_host_volumes(deployment, "helm-values")
    refuse_idle_stop(deployment, "helm-values")
    d = keyed_by_env(deployment, "helm-values")
    repository, tag = split_image(d.image)
    # NGC_API_KEY is the chart's own (model.ngcAPISecret): listed twice, the pod would not start.
    env = [item for item in env_list(d) if item["name"] != "NGC_API_KEY"]
    values: dict[str, Any] = {
        "image": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        "model": {
            "name": d.served_name or d.model,
            "nimCache": contract.CONTAINER_CACHE,
            "openaiPort": d.container_port,
            "jsonLogging": False,
            "logLevel": "INFO",
        },
        "env": env,
        "persistence": {"enabled": True, "size": f"{d.cache_size_gi}Gi", "accessMode": "ReadWriteOnce"},
        "podSecurityContext": {"runAsUser": IMAGE_UID, "runAsGroup": IMAGE_GID, "fsGroup": IMAGE_GID},
        "replicaCount": 1,
        "service": {"type": "ClusterIP", "openaiPort": d.host_port},
        "livenessProbe": _probe(LIVE_PATH, 3),
        "readinessProbe": _probe(READY_PATH, 3),
        "startupProbe": _probe(READY_PATH, d.startup_failure_threshold),
    }
    if "NGC_API_KEY" in d.secret_env:  # the chart's key is not optional: named only when needed
        values["model"]["ngcAPISecret"] = d.secret_name
    if d.args:
        values["customArgs"] = list(d.args)
    if d.gpus_per_node:
        values["resources"] = {"limits": {"nvidia.com/gpu": d.gpus_per_node}}
    return [("values.yaml", documents(d.header("helm-values"), [values]))]


def _probe(path: str, failures: int) -> dict[str, Any]:
    return {
        "enabled": True,
        "path": path,
        "periodSeconds": PROBE_PERIOD_S,
        "timeoutSeconds": 5,
        "failureThreshold": failures,
    }
