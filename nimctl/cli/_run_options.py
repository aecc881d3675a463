"""The options ``nimctl run`` and ``nimctl generate`` share, declared once.

``generate`` describes the NIM ``run`` would start, so it takes ``run``'s command line. An
option whose meaning is the same for both has one alias here, used by both signatures. Where
``generate``'s meaning differs (the files are for another machine, and nothing is started,
built or certified here), its alias stands next to ``run``'s with a comment saying why.
Defaults stay at each parameter: Typer reads them there.

Light on purpose (``nimctl --help`` imports the command modules): typer, typing and what
run.py imports at module level anyway.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from nimctl import contract
from nimctl.cli._common import Preference
from nimctl.cli.gpus import ASSUME_GPUS_GRAMMAR

# -- The same for run and generate ---------------------------------------------------------------

ModelArgument = Annotated[
    str | None,
    typer.Argument(
        help="Model or manifest: a name (tiny-vlm), a manifest file, a URI (hf://ORG/NAME) or a "
        "model folder [tiny-vlm].",
        show_default=False,
    ),
]
ProfileOption = Annotated[
    str | None,
    typer.Option("--profile", help="Profile id or name [chosen for this machine].", show_default=False),
]
PreferOption = Annotated[
    Preference,
    typer.Option(
        "--prefer",
        envvar=contract.PROFILE_PREFERENCE,
        show_envvar=False,
        case_sensitive=False,
        help="Between runnable profiles: throughput (the fewest GPUs) or latency (the most) "
        "[env NIMCTL_PROFILE_PREFERENCE].",
    ),
]
MaxModelLenOption = Annotated[
    int | None,
    typer.Option(
        "--max-model-len",
        min=1,
        help=f"Context length: sets {contract.MAX_MODEL_LEN}; profiles are judged at it.",
        show_default=False,
    ),
]
RestartOption = Annotated[
    str,
    typer.Option("--restart", help="Docker restart policy: no, on-failure[:N], always, unless-stopped."),
]
IdleStopOption = Annotated[
    str | None,
    typer.Option(
        "--idle-stop",
        metavar="DURATION",
        help=f"Stop the instance after DURATION without an inference request (90s, 30m, 1h30m; sets "
        f"{contract.IDLE_STOP}); it exits 0, so --restart on-failure leaves it stopped.",
        show_default=False,
    ),
]
IKnowOption = Annotated[
    bool,
    typer.Option("--i-know", help="With --no-auth: serve keyless on a non-loopback --host, on purpose."),
]
MtlsOption = Annotated[
    bool,
    typer.Option(
        "--mtls",
        help="Mutual TLS: clients must show a certificate the instance's CA issued. Implies --tls.",
    ),
]


def given(ctx: typer.Context, name: str, value: str) -> str | None:
    """``value`` when the user gave the option (or its variable); None when it is the default."""
    source = ctx.get_parameter_source(name)
    # By name: Typer's context may carry its own copy of click's ParameterSource enum.
    return None if source is None or source.name == "DEFAULT" else value


# -- Run's, and generate's where its meaning differs ---------------------------------------------

GpusOption = Annotated[
    str | None,
    typer.Option(
        "--gpus",
        help="GPUs of this machine for the instance: all, none, a count (2) or ids (0,1) [all for a "
        "GPU profile]. To describe other hardware: --assume-gpus.",
        show_default=False,
    ),
]
# generate: the files are for another machine, so --gpus also names the target node's GPUs.
GenerateGpusOption = Annotated[
    str | None,
    typer.Option(
        "--gpus",
        metavar="SPEC",
        help="GPUs of each target node: NAME[:COUNT] (H100-80GB:8, L40S:2) or none; or, as for run, "
        "all, a count or ids of this machine's [this machine's].",
        show_default=False,
    ),
]

AssumeGpusOption = Annotated[
    str | None,
    typer.Option(
        "--assume-gpus",
        metavar="SPEC",
        help="Plan on these GPUs instead of this machine's (with --dry-run: what would run there; "
        f"--gpus then picks among them): {ASSUME_GPUS_GRAMMAR}",
        show_default=False,
    ),
]
# generate: no --dry-run, and a --gpus by name is the assumed GPUs (not a pick among them).
GenerateAssumeGpusOption = Annotated[
    str | None,
    typer.Option(
        "--assume-gpus", metavar="SPEC", help=f"As for run: {ASSUME_GPUS_GRAMMAR}", show_default=False
    ),
]

NodesOption = Annotated[
    int,
    typer.Option(
        "--nodes",
        help="Nodes of a multi-node group on this machine: a leader (the instance, its port) and "
        "workers NAME-node1.. (containers on a network of their own, or processes on loopback "
        "addresses); the profile must span that many nodes.",
    ),
]
# generate: the group is a LeaderWorkerSet on a cluster, not containers on this machine.
GenerateNodesOption = Annotated[
    int, typer.Option("--nodes", help="Nodes of a multi-node group (target lws).")
]

PortOption = Annotated[int, typer.Option("--port", help="Host port of the server.")]
# generate: for kube targets it is the Service's port.
GeneratePortOption = Annotated[
    int, typer.Option("--port", help="Published port (Compose) or the Service's port.")
]

HostOption = Annotated[
    str, typer.Option("--host", help="Host address to publish on (0.0.0.0 exposes it to the network).")
]
# generate: only Compose publishes on a host address; the kube targets have none.
GenerateHostOption = Annotated[str, typer.Option("--host", help="Host address Compose publishes on.")]

NameOption = Annotated[
    str | None, typer.Option("--name", help="Instance name [nimctl-MODEL].", show_default=False)
]
# generate: no instance; the name is the service's and the objects'.
GenerateNameOption = Annotated[
    str | None,
    typer.Option("--name", help="Name of the service and objects [nimctl-MODEL].", show_default=False),
]

CacheOption = Annotated[
    Path | None,
    typer.Option(
        "--cache",
        help=f"Host model cache, mounted at {contract.CONTAINER_CACHE} [~/.cache/nimctl].",
        show_default=False,
    ),
]
# generate: only Compose mounts a host folder; the kube targets use a volume claim.
GenerateCacheOption = Annotated[
    Path | None,
    typer.Option("--cache", help="Host model cache Compose mounts [~/.cache/nimctl].", show_default=False),
]

EnvOption = Annotated[
    list[str] | None,
    typer.Option("--env", "-e", help="KEY=VALUE for the server (repeatable); KEY alone passes yours on."),
]
# generate: no value of this shell goes into the files; credentials become references.
GenerateEnvOption = Annotated[
    list[str] | None,
    typer.Option("--env", "-e", help="KEY=VALUE for the server (repeatable); credentials become references."),
]

ImageOption = Annotated[
    str | None,
    typer.Option(
        "--image", help="Image to run [nimctl/nim-DEVICE:VERSION, built if missing].", show_default=False
    ),
]
# generate: the files name the image; nothing is built.
GenerateImageOption = Annotated[
    str | None, typer.Option("--image", help="Image [nimctl/nim-DEVICE:VERSION].", show_default=False)
]

NoAuthOption = Annotated[
    bool,
    typer.Option(
        "--no-auth",
        help="Serve without an API key (by default each instance gets its own, used by nimctl's "
        "commands; `nimctl env NAME` prints it).",
    ),
]
# generate: the key comes from the secrets, not from an instance nimctl keeps.
GenerateNoAuthOption = Annotated[bool, typer.Option("--no-auth", help="Serve without an API key.")]

TlsOption = Annotated[
    bool,
    typer.Option("--tls", help="Serve https, with a certificate from a CA made for this instance."),
]
# generate: no CA is made; the TLS files come from the secrets.
GenerateTlsOption = Annotated[
    bool, typer.Option("--tls", help="Serve https (the TLS files come from the secrets).")
]

TlsHostOption = Annotated[
    list[str] | None,
    typer.Option(
        "--tls-host",
        metavar="NAME",
        help="Another name or address the certificate is valid for (repeatable; always: localhost, "
        "127.0.0.1, ::1). Implies --tls.",
        show_default=False,
    ),
]
# generate: no certificate is issued (it comes from the secrets), so the option only implies --tls.
GenerateTlsHostOption = Annotated[
    list[str] | None,
    typer.Option("--tls-host", metavar="NAME", help="Implies --tls.", show_default=False),
]

OfflineOption = Annotated[
    bool,
    typer.Option(
        "--offline",
        help="Never touch the network: serve from the model cache only (the server gets "
        f"{contract.DISABLE_MODEL_DOWNLOAD}=1 and HF_HUB_OFFLINE=1). A hub model missing from the "
        "cache fails at once, naming the missing files; `nimctl pull` or `nimctl bundle import` fills "
        f"it. -e {contract.DISABLE_MODEL_DOWNLOAD}=1 means the same.",
    ),
]
# generate: the cache is the target's, so nothing is checked here at once.
GenerateOfflineOption = Annotated[bool, typer.Option("--offline", help="Serve from the cache only.")]

LoraDirOption = Annotated[
    Path | None,
    typer.Option(
        "--lora-dir",
        help=f"Folder of LoRA adapters, one sub-folder each: sets {contract.PEFT_SOURCE} (mounted "
        f"read-only at {contract.CONTAINER_LORA}), so a LoRA profile is chosen.",
        show_default=False,
    ),
]
# generate: only Compose mounts a host folder.
GenerateLoraDirOption = Annotated[
    Path | None,
    typer.Option("--lora-dir", help="Folder of LoRA adapters (Compose only).", show_default=False),
]

LoraRefreshOption = Annotated[
    float | None,
    typer.Option(
        "--lora-refresh",
        metavar="S",
        help=f"Rescan --lora-dir every S seconds (dynamic mode: sets {contract.PEFT_REFRESH_INTERVAL}); "
        "adapters added or removed there are served or dropped, and `nimctl lora add/rm` write there.",
        show_default=False,
    ),
]
# generate: `nimctl lora add/rm` act on a running instance, not on the target's folder.
GenerateLoraRefreshOption = Annotated[
    float | None, typer.Option("--lora-refresh", metavar="S", help="Rescan --lora-dir every S seconds.")
]
