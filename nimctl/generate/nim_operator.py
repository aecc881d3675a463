"""``nimctl generate nim-operator``: a NIMCache and a NIMService (apps.nvidia.com/v1alpha1) for
NVIDIA's NIM Operator.

The NIMCache fills a PVC from the model's hub; the NIMService serves from it with run's profile
pinned. What the CRDs can say decides what is refused:
- a source is NGC, Hugging Face or a NeMo data store: a built-in model (``builtin://``, made
  inside nimctl's image) or a host folder has nothing to cache, so it is refused (use kube);
- profiles are pinned in the NIMCache only for NGC (``spec.source.ngc.model.profiles``); for a
  Hugging Face model the NIMService pins it (``storage.nimCache.profile`` and
  ``NIM_MODEL_PROFILE``);
- a NIMService mounts no Secret as files, so the API key comes from a variable
  (``NIMCTL_API_KEY``, from the Secret) and TLS is refused;
- its ``multiNode`` runs NIM's own MPI/Ray launcher, not nim-serve's roles: ``--nodes`` is
  refused (use lws).
"""

from __future__ import annotations

from typing import Any

from nimctl.errors import UsageError
from nimctl.generate._yaml import documents
from nimctl.generate.deployment import IMAGE_GID, IMAGE_UID, Deployment, keyed_by_env, split_image
from nimctl.generate.kube import (
    annotations,
    env_list,
    labels,
    probes,
    refuse_group,
    refuse_host_volumes,
    refuse_idle_stop,
)

API = "apps.nvidia.com/v1alpha1"
HF_ENDPOINT = "https://huggingface.co"


def render(deployment: Deployment) -> list[tuple[str, str]]:
    refuse_group(deployment, "nim-operator", "lws")
    refuse_host_volumes(deployment, "nim-operator")
    refuse_idle_stop(deployment, "nim-operator")
    d = keyed_by_env(deployment, "nim-operator")
    cache_name = f"{d.name}-cache"
    objects = [_nim_cache(d, cache_name), _nim_service(d, cache_name)]
    return [("nim-operator.yaml", documents(d.header("nim-operator"), objects))]


def pull_secret(d: Deployment) -> str:
    """The image pull secret both CRs name (the NIMCache requires one for its puller image)."""
    return f"{d.name}-pull"


def _source(d: Deployment) -> dict[str, Any]:
    scheme, _, rest = d.model_path.partition("://")
    if scheme == "hf":
        repo, _, revision = rest.partition("@")
        namespace, _, model_name = repo.partition("/")
        hf: dict[str, Any] = {
            "endpoint": HF_ENDPOINT,
            "namespace": namespace,
            "modelName": model_name,
            "authSecret": d.secret_name,  # the operator reads its HF_TOKEN key
            "modelPuller": d.image,  # nimctl's image carries huggingface_hub
            "pullSecret": pull_secret(d),
        }
        if revision:
            hf["revision"] = revision
        return {"hf": hf}
    if scheme == "ngc":
        model: dict[str, Any] = {"profiles": [d.profile_id]} if d.profile_id else {}
        return {
            "ngc": {
                "authSecret": d.secret_name,
                "modelPuller": d.image,
                "pullSecret": pull_secret(d),
                "model": model,
            }
        }
    raise UsageError(
        f"nim-operator cannot cache {d.model_path}: a NIMCache pulls from NGC, Hugging Face or a "
        "NeMo data store only",
        hint="use nimctl generate kube (or helm-values) for a built-in model or a local folder",
    )


def _nim_cache(d: Deployment, name: str) -> dict[str, Any]:
    spec = {
        "source": _source(d),
        "storage": {
            "pvc": {"create": True, "size": f"{d.cache_size_gi}Gi", "volumeAccessMode": "ReadWriteOnce"}
        },
        "userID": IMAGE_UID,
        "groupID": IMAGE_GID,
    }
    return _object("NIMCache", name, d, spec)


def _nim_service(d: Deployment, cache_name: str) -> dict[str, Any]:
    repository, tag = split_image(d.image)
    storage: dict[str, Any] = {"nimCache": {"name": cache_name}, "sharedMemorySizeLimit": d.shm_quantity}
    if d.profile_id:
        storage["nimCache"]["profile"] = d.profile_id
    spec: dict[str, Any] = {
        "image": {
            "repository": repository,
            "tag": tag,
            "pullPolicy": "IfNotPresent",
            "pullSecrets": [pull_secret(d)],
        },
        "authSecret": d.secret_name,
        "storage": storage,
        "env": env_list(d),
        "replicas": 1,
        "userID": IMAGE_UID,
        "groupID": IMAGE_GID,
        "expose": {"service": {"type": "ClusterIP", "port": d.host_port}},
    }
    for key, check in probes(d).items():
        # The operator names the container's port itself: probe it by number.
        check["httpGet"]["port"] = d.container_port
        spec[key] = {"enabled": True, "probe": check}
    if d.args:
        spec["args"] = list(d.args)
    if d.gpus_per_node:
        spec["resources"] = {"limits": {"nvidia.com/gpu": d.gpus_per_node}}
    return _object("NIMService", d.name, d, spec)


def _object(kind: str, name: str, d: Deployment, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": API,
        "kind": kind,
        "metadata": {"name": name, "labels": labels(d), "annotations": annotations(d)},
        "spec": spec,
    }
