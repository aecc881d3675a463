"""What a history line records beside the figures: the machine, the server, the model and the options.

``nimctl bench`` writes one :func:`bench_record` per run (:mod:`.history` adds ``id`` and ``time``);
``--format json`` prints the same object. Keys, documented in docs/json.md:

- ``host``: the machine the bench ran on (name, OS, CPUs, memory) and its GPUs and driver, as
  ``nimctl gpus`` sees them. For an instance nimctl runs here that is the server's machine too; for
  a remote ``--url`` it is only the client's;
- ``target``: the URL, and the nimctl instance there when there is one;
- ``model``, ``profile`` (``id``, ``name``), ``engine_args``: what the server says it runs
  (``/v1/metadata``); None from a server that does not say (not a NIM);
- ``versions``: nimctl's and the server's;
- ``options``: what was asked (the workload, the SLO);
- ``results``: :meth:`~.sweep.SweepResult.to_dict`.
"""

from __future__ import annotations

import os
import platform
import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from nimctl import __version__
from nimctl.errors import ClientError

if TYPE_CHECKING:
    from nimctl.bench.slo import Slo
    from nimctl.bench.sweep import SweepResult
    from nimctl.bench.workload import Workload
    from nimctl.client.http import NimClient


@dataclass(frozen=True)
class ServerFacts:
    """What the server says about itself; every field None when it does not say."""

    url: str
    instance: str | None = None
    profile_id: str | None = None
    profile_name: str | None = None
    engine_args: list[str] | None = None
    server_version: str | None = None
    api_version: str | None = None
    max_model_len: int | None = None
    notes: list[str] = field(default_factory=list)

    def profile(self) -> dict[str, str | None]:
        return {"id": self.profile_id, "name": self.profile_name}


def server_facts(client: NimClient, *, instance: str | None = None) -> ServerFacts:
    """Ask ``/v1/metadata`` and ``/v1/version``; a server without them (plain vLLM) gives Nones."""
    notes: list[str] = []
    try:
        metadata = client.metadata()
    except ClientError as exc:
        notes.append(f"no /v1/metadata: {exc.message}")
        metadata = None
    try:
        version = client.version()
    except ClientError:
        version = None
    info = metadata.model_info[0] if metadata is not None and metadata.model_info else None
    return ServerFacts(
        url=client.base_url,
        instance=instance,
        profile_id=metadata.profile_id if metadata else None,
        profile_name=metadata.profile_name if metadata else None,
        engine_args=metadata.engine_args if metadata else None,
        server_version=(metadata.version if metadata else None) or (version.release if version else None),
        api_version=version.api if version else None,
        max_model_len=info.max_model_len if info is not None else None,
        notes=notes,
    )


def host_facts() -> dict[str, Any]:
    """This machine: name, OS, Python, CPUs, memory, and its GPUs and driver (none is not an error)."""
    from nimctl.gpu import detect_inventory

    inventory = detect_inventory()
    return {
        "hostname": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_bytes": _memory_bytes(),
        "gpus": [{"name": gpu.name, "memory_bytes": gpu.memory_total} for gpu in inventory.gpus],
        "driver": inventory.driver_version,
        "cuda_driver": inventory.cuda_driver_version,
        "gpu_source": inventory.source,  # "assumed": NIMCTL_ASSUME_GPUS, not read from NVML
        "gpu_note": inventory.reason,
    }


def _memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not on every platform
        return None


def bench_record(
    result: SweepResult,
    facts: ServerFacts,
    *,
    host: dict[str, Any],
    workload: Workload,
    slo: Slo | None,
) -> dict[str, Any]:
    """The history line of one run (without ``id`` and ``time``, which :func:`.history.append_run` adds)."""
    url = without_userinfo(facts.url)
    results = result.to_dict()
    results["base_url"] = without_userinfo(results["base_url"])
    return {
        "host": host,
        "target": {"url": url, "instance": facts.instance},
        "model": result.model,
        "profile": facts.profile(),
        "engine_args": facts.engine_args,
        "versions": {
            "nimctl": __version__,
            "python": sys.version.split()[0],
            "server": facts.server_version,
            "api": facts.api_version,
        },
        "options": {"workload": workload.to_dict(), "slo": None if slo is None else slo.to_dict()},
        "results": results,
    }


def without_userinfo(url: str) -> str:
    """``https://user:secret@host/`` -> ``https://host/``: a URL's credentials are not recorded."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))
