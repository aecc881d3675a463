"""Checks on the engine arguments a user gives (reading them: :mod:`nimctl.engine_flags`).

The front launches vLLM with flags of its own (``--model``, ``--served-model-name``, ``--host``,
``--port``) and relies on the engine answering plain HTTP on that loopback port without a key.
User arguments come last on the engine's command line, where argparse lets them win, so the
flags that would break that contract are refused before anything starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from nimctl import contract
from nimctl.engine_flags import flag_name
from nimctl.errors import ConfigError

PASSTHROUGH_ORIGIN = contract.PASSTHROUGH_ARGS
CLI_ORIGIN = "arguments after nim-serve"

_LOOPBACK_HTTP = "the front talks plain HTTP to the engine on loopback"
_NOT_HTTP = "the engine would not serve the HTTP routes the front relays"

# flag -> (why the front needs it left alone, what to use instead or None)
RESERVED_FLAGS: dict[str, tuple[str, str | None]] = {
    "--model": ("the front passes the fetched model folder", contract.MODEL_PATH),
    "--served-model-name": ("the front's readiness check looks for that name", contract.SERVED_MODEL_NAME),
    "--host": (
        "the engine must stay on 127.0.0.1 behind the front",
        f"{contract.SERVER_HOST} (the front's address)",
    ),
    "--port": (
        "the front relays to the engine's loopback port",
        f"{contract.SERVER_PORT} (the public port) or {contract.ENGINE_PORT} (the engine's)",
    ),
    "--uds": (_LOOPBACK_HTTP, None),
    "--api-key": ("the front's health checks and relayed requests carry no engine key", None),
    "--ssl-keyfile": (_LOOPBACK_HTTP, None),
    "--ssl-certfile": (_LOOPBACK_HTTP, None),
    "--ssl-ca-certs": (_LOOPBACK_HTTP, None),
    "--ssl-cert-reqs": (_LOOPBACK_HTTP, None),
    "--ssl-ciphers": (_LOOPBACK_HTTP, None),
    "--enable-ssl-refresh": (_LOOPBACK_HTTP, None),
    "--headless": (_NOT_HTTP, f"{contract.NODE_RANK} (a worker of a multi-node group runs headless)"),
    "--nnodes": ("the group's size places every node", contract.NUM_COMPUTE_NODES),
    "--node-rank": ("the leader and the workers are told their rank", contract.NODE_RANK),
    "--master-addr": ("the workers find the leader's engine there", contract.LEADER_ADDRESS),
    "--master-port": ("the engine's store is on the port after the join port", contract.LEADER_PORT),
    "--grpc": (_NOT_HTTP, None),
    "--tokens-only": (_NOT_HTTP, None),
    "--no-enable-scale-out": ("the front's /v1/chat/completions/render needs --enable-scale-out", None),
    # vLLM splices a config file's options into the command line: nothing here could check them.
    "--config": (
        "a config file could set any of the flags above unchecked",
        "the options themselves, in NIM_PASSTHROUGH_ARGS",
    ),
}


def _reserved(name: str) -> str | None:
    if name in RESERVED_FLAGS:
        return name
    # argparse expands an unambiguous abbreviation (vLLM's parser allows them): `--hos` is --host.
    # No vLLM option is itself a prefix of a reserved flag, so a prefix can only mean one of them
    # or be an error argparse reports anyway.
    matches = [flag for flag in RESERVED_FLAGS if flag.startswith(name)]
    return matches[0] if len(matches) == 1 else None


def check_user_engine_args(args: Sequence[str], origin: str) -> None:
    """Refuse the flags the front owns; ``origin`` says where ``args`` came from."""
    for arg in args:
        name = flag_name(arg)
        flag = _reserved(name) if name else None
        if flag is None:
            continue
        why, instead = RESERVED_FLAGS[flag]
        given = arg.split("=", 1)[0]
        shown = flag if given == flag else f"{given} (vLLM reads it as {flag})"
        remedy = f"use {instead} instead" if instead else "remove it"
        raise ConfigError(f"{origin} may not set {shown}: {why}; {remedy}")
