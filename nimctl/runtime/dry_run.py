"""What ``nimctl run --dry-run`` prints: the equivalent ``docker run`` or shell command, secrets masked.

Secrets are environment variables with a secret-looking name (``NGC_API_KEY``, ``MY_TOKEN``)
and the values of secret engine flags (``-- --api-key X``), also inside
``NIM_PASSTHROUGH_ARGS``; each is shown as ``***``.
"""

from __future__ import annotations

import re
import shlex
from typing import TYPE_CHECKING

from nimctl import contract
from nimctl.runtime.spec import is_secret, url_host

if TYPE_CHECKING:
    from nimctl.runtime.spec import RunSpec

MASK = "***"
# Engine flags whose value is a secret (vLLM's --api-key, an --hf-token): the flag's last word.
# Not a substring match: --ssl-keyfile (a path) and --max-num-batched-tokens are not secrets.
_SECRET_FLAG = re.compile(
    r"^--?(?:[a-z0-9]+[-_])*(?:api[-_]?key|key|token|secret|password|passwd|credentials?)$", re.IGNORECASE
)
# Engine arguments passed through the environment, as NIM does; masked like the command line.
PASSTHROUGH_ARGS_ENV = contract.PASSTHROUGH_ARGS


def masked_args(args: list[str]) -> list[str]:
    """Engine arguments with the values of secret flags (``--api-key X``, ``--api-key=X``) as ``***``."""
    masked: list[str] = []
    hide_next = False
    for arg in args:
        if hide_next:
            masked.append(MASK)
            hide_next = False
            continue
        flag, equals, _ = arg.partition("=")
        if arg.startswith("-") and _SECRET_FLAG.match(flag):
            masked.append(f"{flag}={MASK}" if equals else arg)
            hide_next = not equals
        else:
            masked.append(arg)
    return masked


def masked_env(spec: RunSpec) -> dict[str, str]:
    masked = {key: (MASK if is_secret(key) else value) for key, value in spec.env.items()}
    if PASSTHROUGH_ARGS_ENV in masked:
        try:
            words = shlex.split(masked[PASSTHROUGH_ARGS_ENV])
            masked[PASSTHROUGH_ARGS_ENV] = shlex.join(masked_args(words))
        except ValueError:  # unbalanced quotes: no telling what is a secret in there
            masked[PASSTHROUGH_ARGS_ENV] = MASK
    return masked


def docker_run_line(spec: RunSpec, *, detach: bool) -> str:
    """The ``docker run`` command equivalent to what nimctl does, secrets shown as ``***``."""
    # docker refuses --rm with a restart policy; nimctl removes a foreground instance itself anyway.
    remove = not detach and spec.restart == "no"
    args = ["docker", "run", *(["-d"] if detach else []), *(["--rm"] if remove else []), "--name", spec.name]
    args += ["--user", spec.user, "--cap-drop", "ALL", "--security-opt", "no-new-privileges"]
    if spec.shm_size:
        args += ["--shm-size", spec.shm_size]
    flag = spec.gpus.docker_flag()
    if flag:
        args += ["--gpus", flag]
    if spec.restart != "no":
        args += ["--restart", spec.restart]
    args += ["-p", f"{url_host(spec.host)}:{spec.port}:{contract.CONTAINER_PORT}"]
    args += ["-v", f"{spec.cache_dir}:{contract.CONTAINER_CACHE}"]
    for mount in spec.mounts:
        args += ["-v", f"{mount.source}:{mount.target}{':ro' if mount.read_only else ''}"]
    for key, value in masked_env(spec).items():
        args += ["-e", f"{key}={value}"]
    for key, value in spec.labels.items():
        args += ["--label", f"{key}={value}"]
    args.append(spec.image or "")
    args += masked_args(spec.engine_args)
    return shlex.join(args)


def local_run_line(spec: RunSpec) -> str:
    """The shell command equivalent to ``--runtime local``, secrets shown as ``***``."""
    env = [f"{key}={value}" for key, value in masked_env(spec).items()]
    return shlex.join(["env", *env, "nim-serve", *masked_args(spec.engine_args)])
