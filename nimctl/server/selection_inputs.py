"""What ``nim-serve`` selects a profile with, so that ``nimctl run``, ``nimctl profiles select``
and ``list-model-profiles`` choose what it would.

``nim-serve`` (:mod:`nimctl.server.plan`) reads its :class:`~nimctl.server.config.ServerConfig`
and selects with :func:`inputs_from_config`:

- the model: ``NIM_MODEL_PATH``, else its default model (``builtin://tiny-vlm``);
- the pinned profile: ``NIM_MODEL_PROFILE``;
- LoRA: asked for when ``NIM_PEFT_SOURCE`` is set;
- the context: the last ``--max-model-len`` in ``NIM_PASSTHROUGH_ARGS`` (argparse keeps the
  last one), else ``NIM_MAX_MODEL_LEN``, else the profile's own;
- the preference between runnable profiles: ``NIMCTL_PROFILE_PREFERENCE``, else throughput;
- the node count of the group: ``NIM_NUM_COMPUTE_NODES``, else 1 (only profiles for that many
  nodes are runnable).

:func:`selection_inputs` derives the same six through the same function from an environment
and the arguments after ``nim-serve``: ``nimctl run`` calls it with the environment and arguments
it will give the server, so the profile it pins is the one the server would choose.
What a command gives explicitly wins, as arguments after ``nim-serve`` win over the variables,
and the variable it replaces is not read. Only the variables above are read, so one the
selection does not use (a bad ``NIM_SERVER_PORT``, say) does not stop a listing; a bad one of
these is the one-line ``ConfigError`` ``nim-serve`` would give.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from nimctl import contract
from nimctl.engine_flags import requested_context_length
from nimctl.server.config import ServerConfig

if TYPE_CHECKING:
    from nimctl.profiles.selection import Prefer

# The variables nim-serve's profile selection depends on (see ENV_FIELDS in nimctl.server.config).
SELECTION_VARIABLES = (
    contract.MODEL_PATH,
    contract.MODEL_PROFILE,
    contract.PEFT_SOURCE,
    contract.MAX_MODEL_LEN,
    contract.PASSTHROUGH_ARGS,
    contract.PROFILE_PREFERENCE,
    contract.NUM_COMPUTE_NODES,
)


@dataclass(frozen=True)
class ServeInputs:
    """The inputs of ``nim-serve``'s profile selection."""

    model: str
    profile: str | None
    lora: bool
    max_model_len: int | None
    prefer: Prefer = "throughput"
    nodes: int = 1


def selection_inputs(
    environ: Mapping[str, str] | None = None,
    engine_args: Sequence[str] = (),
    *,
    model: str | None = None,
    profile: str | None = None,
    lora: bool | None = None,
    max_model_len: int | None = None,
    prefer: Prefer | None = None,
    nodes: int | None = None,
) -> ServeInputs:
    """What ``nim-serve`` would select with in ``environ`` (default: this process's environment),
    given ``engine_args`` after it; a keyword that is not None replaces the value derived from
    both."""
    env = os.environ if environ is None else environ
    # A value given here is not read from the environment, so a bad variable it replaces is no error.
    given = {
        contract.MODEL_PATH: model,
        contract.MODEL_PROFILE: profile,
        contract.PEFT_SOURCE: lora,
        contract.MAX_MODEL_LEN: max_model_len,
        contract.PASSTHROUGH_ARGS: max_model_len,  # read here only for its --max-model-len
        contract.PROFILE_PREFERENCE: prefer,
        contract.NUM_COMPUTE_NODES: nodes,
    }
    read = [name for name in SELECTION_VARIABLES if name in env and given.get(name) is None]
    config = ServerConfig.from_env({name: env[name] for name in read})
    derived = inputs_from_config(config, engine_args)
    return ServeInputs(
        model=model or derived.model,
        profile=derived.profile if profile is None else profile,
        lora=derived.lora if lora is None else lora,
        max_model_len=max_model_len or derived.max_model_len,
        prefer=prefer or derived.prefer,
        nodes=derived.nodes if nodes is None else nodes,
    )


def inputs_from_config(config: ServerConfig, engine_args: Sequence[str] = ()) -> ServeInputs:
    """The selection inputs of a ``nim-serve`` run with ``config`` and the arguments after it."""
    return ServeInputs(
        model=config.model_path,
        profile=config.model_profile,
        lora=bool(config.peft_source),
        max_model_len=requested_context_length(
            [*config.passthrough_args, *engine_args], config.max_model_len
        ),
        prefer=config.profile_preference,
        nodes=config.num_compute_nodes,
    )
