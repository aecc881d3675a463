"""``nimctl generate compose``: the container ``nimctl run`` starts, as a Compose file.

Written for the Compose Specification without a ``version:`` key, which Debian 12's
docker-compose 1.29 reads (1.27 and later) as well as ``docker compose`` v2; GPU reservations
(``deploy.resources.reservations.devices``) need 1.28 or later outside a swarm.

Credentials are files the user fills, never values in the file: the instance's key file (and TLS
files) as ``secrets:`` mounted where ``nimctl run`` mounts its credentials folder, a hub token
as a secret read through ``HF_TOKEN_PATH``, any other credential from an ``env_file``.
"""

from __future__ import annotations

from typing import Any

from nimctl import contract
from nimctl.generate._yaml import documents
from nimctl.generate.deployment import FILE_VARIANTS, READY_PATH, Deployment
from nimctl.generate.kube import refuse_group
from nimctl.runtime.spec import url_host

FILE_NAME = "docker-compose.yaml"
SECRETS_DIR = "secrets"  # next to the Compose file, as relative paths resolve
HF_TOKEN_TARGET = f"{contract.CONTAINER_CREDENTIALS}/hf-token"
# The image has python3 (and no curl): the check fails on any answer but 200, or none in 4 s.
_HEALTH = (
    "import ssl, urllib.request; "
    "urllib.request.urlopen('{url}', timeout=4, context=ssl._create_unverified_context())"
)


def render(deployment: Deployment) -> list[tuple[str, str]]:
    d = deployment
    refuse_group(d, "compose", "lws")
    service: dict[str, Any] = {
        "image": d.image,
        "container_name": d.name,
        "user": d.user,  # as run: the caller's uid:gid, so the host cache stays the caller's
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "shm_size": d.shm_size,
        "restart": d.restart,
        "ports": [f"{url_host(d.host)}:{d.host_port}:{d.container_port}"],
        "volumes": volumes(d),
        "environment": environment(d),
        "healthcheck": healthcheck(d),
        "labels": {
            contract.MODEL_LABEL: d.model,
            contract.PROFILE_LABEL: d.profile_id or "",
            contract.PROFILE_NAME_LABEL: d.profile_name or "",
        },
    }
    if d.args:
        service["command"] = list(d.args)
    if d.gpus_per_node:
        device: dict[str, Any] = {"driver": "nvidia", "capabilities": ["gpu"]}
        device |= {"device_ids": list(d.gpu_ids)} if d.gpu_ids else {"count": d.gpus_per_node}
        service["deploy"] = {"resources": {"reservations": {"devices": [device]}}}
    secrets = secret_files(d)
    if secrets:
        service["secrets"] = [
            {"source": name, "target": target} for name, (_, target) in sorted(secrets.items())
        ]
    env_only = env_file_secrets(d)
    if env_only:
        service["env_file"] = [f"{SECRETS_DIR}/{d.name}.env"]
    compose: dict[str, Any] = {"services": {d.name: service}}
    if secrets:
        compose["secrets"] = {name: {"file": path} for name, (path, _) in sorted(secrets.items())}
    return [(FILE_NAME, documents(d.header("compose") + _secrets_note(d, secrets, env_only), [compose]))]


def volumes(d: Deployment) -> list[str]:
    found = [f"{d.cache_dir}:{contract.CONTAINER_CACHE}"]
    found += [f"{v.source}:{v.target}{':ro' if v.read_only else ''}" for v in d.host_volumes]
    return found


def environment(d: Deployment) -> dict[str, str]:
    env = dict(d.env)
    if "HF_TOKEN" in d.secret_env:
        env[FILE_VARIANTS["HF_TOKEN"]] = HF_TOKEN_TARGET
    return env


def secret_files(d: Deployment) -> dict[str, tuple[str, str]]:
    """Secret name -> (the file the user fills, where the container reads it)."""
    found = {
        _secret_name(name): (f"{SECRETS_DIR}/{name}", f"{contract.CONTAINER_CREDENTIALS}/{name}")
        for name in d.credential_files
    }
    if "HF_TOKEN" in d.secret_env:
        found["hf_token"] = (f"{SECRETS_DIR}/hf-token", HF_TOKEN_TARGET)
    return found


def env_file_secrets(d: Deployment) -> list[str]:
    """Credentials the server reads only from its environment: an env_file the user fills."""
    return [key for key in d.secret_env if key not in FILE_VARIANTS]


def healthcheck(d: Deployment) -> dict[str, Any]:
    url = f"{d.scheme}://127.0.0.1:{d.container_port}{READY_PATH}"
    return {
        "test": ["CMD", "python3", "-c", _HEALTH.format(url=url)],
        "interval": "10s",
        "timeout": "5s",
        "retries": 3,
        # Failures while the model loads do not count: the same budget as the cluster's startup probe.
        "start_period": f"{d.startup_budget_s}s",
    }


def _secret_name(file_name: str) -> str:
    return file_name.replace(".", "_").replace("-", "_")


def _secrets_note(d: Deployment, secrets: dict[str, tuple[str, str]], env_only: list[str]) -> str:
    if not secrets and not env_only:
        return ""
    lines = ["", "Before `docker-compose up`, create these files next to this one (never commit them):"]
    for name, (path, _) in sorted(secrets.items()):
        what = {
            "api_keys": "API keys clients must send, one a line (e.g. openssl rand -hex 32)",
            "hf_token": "a Hugging Face token (may be empty for a public model)",
        }.get(name, "the TLS file of that name (PEM)")
        lines.append(f"  {path}: {what}")
    if env_only:
        lines.append(f"  {SECRETS_DIR}/{d.name}.env: KEY=VALUE lines for {', '.join(env_only)}")
    return "".join(f"# {line}".rstrip() + "\n" for line in lines)
