"""``nimctl generate kube``: a Deployment (or a StatefulSet), a Service and the cache's
PersistentVolumeClaim; the pod's pieces are shared with the LeaderWorkerSet (:mod:`.lws`) and
the NIM Operator's NIMService (:mod:`.nim_operator`).

The pod runs the image as its own uid 1000 (the nim-llm chart's), never root, with every
capability dropped, no privilege escalation and a read-only root filesystem: nim-serve and its
engine write only to the cache (a volume), ``/tmp`` and ``$HOME`` (emptyDirs here) and
``/dev/shm`` (an emptyDir in memory, sized as ``nimctl run`` sizes ``--shm-size``).
"""

from __future__ import annotations

from typing import Any

from nimctl import __version__, contract
from nimctl.errors import UsageError
from nimctl.generate._yaml import documents
from nimctl.generate.deployment import (
    HOME_DIR,
    IMAGE_GID,
    IMAGE_UID,
    LIVE_PATH,
    PROBE_PERIOD_S,
    READY_PATH,
    Deployment,
)

PORT_NAME = "http"
CACHE_VOLUME = "nim-cache"
CREDENTIALS_VOLUME = "credentials"
OPTIONS = ("cache_per_replica",)
GPU_RESOURCE = "nvidia.com/gpu"


def render(deployment: Deployment, *, cache_per_replica: bool = False) -> list[tuple[str, str]]:
    refuse_group(deployment, "kube", "lws")
    refuse_host_volumes(deployment, "kube")
    refuse_idle_stop(deployment, "kube")
    d = deployment
    pod = {"metadata": {"labels": labels(d), "annotations": annotations(d)}, "spec": pod_spec(d)}
    workload: dict[str, Any] = {
        "replicas": 1,
        "selector": {"matchLabels": selector(d)},
        "template": pod,
    }
    objects: list[dict[str, Any]] = []
    if cache_per_replica:
        # Each replica fills a cache of its own: a StatefulSet's claim per pod, nothing shared.
        pod["spec"]["volumes"] = [v for v in pod["spec"]["volumes"] if v["name"] != CACHE_VOLUME]
        workload |= {"serviceName": d.name, "volumeClaimTemplates": [claim(d, CACHE_VOLUME, template=True)]}
        objects.append(kube_object("apps/v1", "StatefulSet", d, workload))
    else:
        # One ReadWriteOnce claim: a new pod may start only once the old one let go of it.
        workload["strategy"] = {"type": "Recreate"}
        objects.append(claim(d, cache_claim_name(d)))
        objects.append(kube_object("apps/v1", "Deployment", d, workload))
    objects.append(service(d, selector(d)))
    return [("kube.yaml", documents(d.header("kube"), objects))]


# --- the pieces the cluster targets share ------------------------------------------------------
def refuse_group(d: Deployment, target: str, instead: str) -> None:
    if d.nodes > 1:
        raise UsageError(
            f"{target} cannot express --nodes {d.nodes}: it describes a single node, "
            f"and profile {d.profile_name} spans {d.nodes}",
            hint=f"nimctl generate {instead} ... --nodes {d.nodes} (a LeaderWorkerSet), or leave --nodes out",
        )


def refuse_host_volumes(d: Deployment, target: str) -> None:
    if d.host_volumes:
        volume = d.host_volumes[0]
        raise UsageError(
            f"{target} cannot mount {volume.source} (at {volume.target}): a cluster has no host folder",
            hint="name the model by its manifest or hub URI, and leave out --lora-dir "
            "(put adapters in the image or a volume of your own)",
        )


def refuse_idle_stop(d: Deployment, target: str) -> None:
    """Kubernetes restarts a pod's container whatever its exit code (restartPolicy Always, the
    only one a Deployment, StatefulSet or LeaderWorkerSet takes): an idle stop would restart it."""
    if any(key == contract.IDLE_STOP for key, _ in d.env):
        raise UsageError(
            f"{target} cannot express -e {contract.IDLE_STOP}: Kubernetes restarts a container "
            "that exits, whatever its code, so the idle stop would only restart the model",
            hint="leave it out and scale the workload to 0 instead (kubectl scale, or an autoscaler "
            "such as KEDA); nimctl generate compose keeps it, with --restart on-failure",
        )


def labels(d: Deployment) -> dict[str, str]:
    return selector(d) | {"app.kubernetes.io/managed-by": "nimctl", "app.kubernetes.io/version": __version__}


def selector(d: Deployment) -> dict[str, str]:
    return {"app.kubernetes.io/name": d.name}


def annotations(d: Deployment) -> dict[str, str]:
    # Annotations, not labels: a model URI and a 64-hex profile id are no valid label values.
    notes = {
        contract.MODEL_LABEL: d.model,
        contract.SOURCE_LABEL: d.model_path,
        contract.VERSION_LABEL: __version__,
    }
    if d.profile_id:
        notes[contract.PROFILE_LABEL] = d.profile_id
        notes[contract.PROFILE_NAME_LABEL] = d.profile_name or ""
    return notes


def kube_object(
    api: str, kind: str, d: Deployment, spec: dict[str, Any], name: str | None = None
) -> dict[str, Any]:
    return {
        "apiVersion": api,
        "kind": kind,
        "metadata": {"name": name or d.name, "labels": labels(d), "annotations": annotations(d)},
        "spec": spec,
    }


def cache_claim_name(d: Deployment) -> str:
    return f"{d.name}-cache"


def claim(d: Deployment, name: str, *, template: bool = False) -> dict[str, Any]:
    spec = {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": f"{d.cache_size_gi}Gi"}}}
    if template:
        return {"metadata": {"name": name, "labels": labels(d)}, "spec": spec}
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "labels": labels(d), "annotations": annotations(d)},
        "spec": spec,
    }


def service(d: Deployment, select: dict[str, str]) -> dict[str, Any]:
    # run's --port is the port clients use: the Service's; the container keeps the image's own.
    port = {"name": PORT_NAME, "port": d.host_port, "targetPort": PORT_NAME, "protocol": "TCP"}
    return kube_object("v1", "Service", d, {"type": "ClusterIP", "selector": select, "ports": [port]})


def env_list(d: Deployment, extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The server's variables; credentials come from the Secret by name (never a value here).
    ``extra`` (a group's) go first, so that ``$(LWS_LEADER_ADDRESS)`` is expanded before use."""
    env = list(extra or [])
    given = {item["name"] for item in env}
    env += [{"name": key, "value": value} for key, value in d.env if key not in given]
    for key in d.secret_env:
        # The download credentials are optional: a public model needs none.
        ref = {"name": d.secret_name, "key": key, "optional": key in contract.PASSTHROUGH_SECRETS}
        env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    return env


def probe(d: Deployment, path: str, *, failures: int = 3, timeout: int = 5) -> dict[str, Any]:
    return {
        "httpGet": {"path": path, "port": PORT_NAME, "scheme": d.scheme.upper()},
        "periodSeconds": PROBE_PERIOD_S,
        "timeoutSeconds": timeout,
        "failureThreshold": failures,
    }


def probes(d: Deployment) -> dict[str, Any]:
    """Liveness on live, readiness on ready, and a start-up probe on ready that allows the model
    load its budget (:func:`~nimctl.generate.deployment.startup_budget_s`) before the others count."""
    return {
        "livenessProbe": probe(d, LIVE_PATH),
        "readinessProbe": probe(d, READY_PATH),
        "startupProbe": probe(d, READY_PATH, failures=d.startup_failure_threshold),
    }


def container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
    }


def pod_security() -> dict[str, Any]:
    # fsGroup: the cache volume is made writable for the image's group.
    return {
        "runAsNonRoot": True,
        "runAsUser": IMAGE_UID,
        "runAsGroup": IMAGE_GID,
        "fsGroup": IMAGE_GID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def resources(d: Deployment) -> dict[str, Any]:
    return {"limits": {GPU_RESOURCE: d.gpus_per_node}} if d.gpus_per_node else {}


def mounts(d: Deployment) -> list[dict[str, Any]]:
    found = [
        {"name": CACHE_VOLUME, "mountPath": contract.CONTAINER_CACHE},
        {"name": "dshm", "mountPath": "/dev/shm"},
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "home", "mountPath": HOME_DIR},
    ]
    if d.credential_files:
        found.append(
            {"name": CREDENTIALS_VOLUME, "mountPath": contract.CONTAINER_CREDENTIALS, "readOnly": True}
        )
    return found


def volumes(d: Deployment, cache: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The pod's volumes; ``cache`` (None: the Deployment's claim) is the cache volume's source."""
    found = [
        {"name": CACHE_VOLUME, **(cache or {"persistentVolumeClaim": {"claimName": cache_claim_name(d)}})},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": d.shm_quantity}},
        {"name": "tmp", "emptyDir": {}},
        {"name": "home", "emptyDir": {}},
    ]
    if d.credential_files:
        # The instance's credentials folder, as run mounts it: the Secret's keys named as its files.
        items = [{"key": name, "path": name} for name in d.credential_files]
        found.append({"name": CREDENTIALS_VOLUME, "secret": {"secretName": d.secret_name, "items": items}})
    return found


def container(
    d: Deployment, *, env_extra: list[dict[str, Any]] | None = None, with_probes: dict[str, Any] | None = None
) -> dict[str, Any]:
    main: dict[str, Any] = {
        "name": "nim",
        "image": d.image,
        "env": env_list(d, env_extra),
        "ports": [{"name": PORT_NAME, "containerPort": d.container_port, "protocol": "TCP"}],
        "securityContext": container_security(),
        "volumeMounts": mounts(d),
        **(with_probes if with_probes is not None else probes(d)),
    }
    if d.args:
        main["args"] = list(d.args)
    if resources(d):
        main["resources"] = resources(d)
    return main


def pod_spec(
    d: Deployment, main: dict[str, Any] | None = None, cache: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {
        "containers": [main or container(d)],
        "securityContext": pod_security(),
        # nim-serve drains requests in flight on SIGTERM (NIMCTL_SHUTDOWN_TIMEOUT): leave it time.
        "terminationGracePeriodSeconds": 60,
        "volumes": volumes(d, cache),
    }
