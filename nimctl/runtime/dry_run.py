"""What ``nimctl run --dry-run`` prints: the equivalent ``docker run`` or shell command, secrets masked.

Secrets are environment variables with a secret-looking name (``NGC_API_KEY``, ``MY_TOKEN``)
and the values of secret engine flags (``-- --api-key X``), also inside
``NIM_PASSTHROUGH_ARGS``; each is shown as ``***``. The ``docker run`` line is the rendering of
the same container description the Docker runtime starts (:mod:`nimctl.runtime.container`).
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING

from nimctl import contract
from nimctl.engine_flags import MASK
from nimctl.engine_flags import masked as masked_args
from nimctl.runtime.container import ContainerDescription, describe_container, docker_run_argv
from nimctl.runtime.spec import is_secret

if TYPE_CHECKING:
    from nimctl.runtime.spec import RunSpec

# Engine arguments passed through the environment, as NIM does; masked like the command line.
PASSTHROUGH_ARGS_ENV = contract.PASSTHROUGH_ARGS
# Where a secret is, not the secret: shown, so that --dry-run says where the server looks.
_SECRET_PATHS = frozenset({contract.API_KEY_FILE, contract.SSL_KEY_PATH})


def masked_env(env: Mapping[str, str]) -> dict[str, str]:
    """The variables, in their order, with secret values (and secrets in the engine's) as ``***``."""
    hidden = {key for key in env if is_secret(key) and key not in _SECRET_PATHS}
    masked = {key: (MASK if key in hidden else value) for key, value in env.items()}
    if PASSTHROUGH_ARGS_ENV in masked:
        try:
            words = shlex.split(masked[PASSTHROUGH_ARGS_ENV])
            masked[PASSTHROUGH_ARGS_ENV] = shlex.join(masked_args(words))
        except ValueError:  # unbalanced quotes: no telling what is a secret in there
            masked[PASSTHROUGH_ARGS_ENV] = MASK
    return masked


def masked_container(description: ContainerDescription) -> ContainerDescription:
    """The description with its secrets (variables, engine flags) as ``***``, for printing."""
    return replace(
        description,
        env=tuple(masked_env(dict(description.env)).items()),
        command=tuple(masked_args(description.command)),
    )


def docker_run_line(spec: RunSpec, *, detach: bool) -> str:
    """The ``docker run`` command equivalent to what nimctl does, secrets shown as ``***``."""
    return shlex.join(docker_run_argv(masked_container(describe_container(spec)), detach=detach))


def local_run_line(spec: RunSpec) -> str:
    """The shell command equivalent to ``--runtime local``, secrets shown as ``***``."""
    env = [f"{key}={value}" for key, value in masked_env(spec.env).items()]
    return shlex.join(["env", *env, "nim-serve", *masked_args(spec.engine_args)])


def docker_network_line(group: str) -> str:
    """The ``docker network create`` a group's members join (nimctl.runtime.group)."""
    from nimctl.runtime.group import network_name

    labels = [f"{contract.MANAGED_LABEL}=true", f"{contract.GROUP_LABEL}={group}"]
    words = ["docker", "network", "create", "--driver", "bridge"]
    for label in labels:
        words += ["--label", label]
    return shlex.join([*words, network_name(group)])
