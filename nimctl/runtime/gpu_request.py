"""``--gpus`` of ``nimctl run``: which of the visible GPUs an instance gets.

Parsed once (:meth:`GpuRequest.parse`); the Docker runtime turns it into device requests, the
local runtime into ``CUDA_VISIBLE_DEVICES``, and profile selection reads :meth:`GpuRequest.visible`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Literal

from nimctl.errors import UsageError

if TYPE_CHECKING:
    from nimctl.gpu import Inventory

# An index, a GPU UUID or a MIG device UUID, in either case.
_GPU_ID = re.compile(r"[0-9]+|GPU-[0-9a-f-]+|MIG-[0-9a-f-/]+", re.IGNORECASE)


@dataclass(frozen=True)
class GpuRequest:
    """``--gpus``: ``all``, ``none``, a count (``2``) or device ids (``0,1``, ``device=1``)."""

    kind: Literal["none", "all", "count", "ids"]
    count: int = 0
    ids: tuple[str, ...] = ()

    @classmethod
    def parse(cls, text: str) -> GpuRequest:
        value = text.strip()
        keyword = value.lower()
        if keyword in {"none", "cpu", "0"}:
            return cls("none")
        if keyword == "all":
            return cls("all")
        if value.isdigit():
            return cls("count", count=int(value))
        # Only the keywords are case-blind: UUIDs are kept as typed (Docker passes them on as is).
        ids = value[len("device=") :] if keyword.startswith("device=") else value
        parts = tuple(part.strip() for part in ids.strip(",").split(",") if part.strip())
        if parts and all(_GPU_ID.fullmatch(part) for part in parts):
            return cls("ids", ids=parts)
        raise UsageError(
            f"bad --gpus value {text!r}",
            hint="use all, none, a count (2) or device ids (0,1 or device=1)",
        )

    def docker_flag(self) -> str | None:
        """The ``docker run --gpus`` value (None: no flag)."""
        if self.kind == "none":
            return None
        if self.kind == "all":
            return "all"
        if self.kind == "count":
            return str(self.count)
        return f'"device={",".join(self.ids)}"'

    def cuda_visible_devices(self, visible: Inventory) -> str | None:
        """``CUDA_VISIBLE_DEVICES`` for a host process, the GPUs a container would be given
        (``visible``: the part of the inventory this request selected); None leaves the caller's.

        UUIDs where NVML gave them: the value replaces the caller's, and CUDA reads an index
        in its own device order (fastest first, unless CUDA_DEVICE_ORDER=PCI_BUS_ID), which
        need not be NVML's, so an index could name another GPU.
        """
        if self.kind == "all":
            return None
        if self.kind == "none":
            return ""
        return ",".join(gpu.uuid or str(gpu.index) for gpu in visible.gpus)

    def by_uuid(self, visible: Inventory) -> GpuRequest:
        """The GPUs ``visible`` holds (this request's choice), named by UUID for Docker.

        Docker numbers GPUs as the host does, and ``all`` is every GPU of the host, while
        nimctl's indices, "the first N" and "all" follow the caller's CUDA_VISIBLE_DEVICES, so
        the container could get other GPUs than the profile was chosen for. Unchanged without
        UUIDs (an assumed inventory), for ``none``, and for ``all`` when nothing is hidden.
        """
        uuids = tuple(gpu.uuid for gpu in visible.gpus if gpu.uuid)
        if not uuids or len(uuids) != len(visible.gpus):
            return self
        if self.kind in {"ids", "count"} or (self.kind == "all" and visible.hidden):
            return GpuRequest("ids", ids=uuids)
        return self

    def visible(self, inventory: Inventory) -> Inventory:
        """The part of ``inventory`` the container will see, for profile selection."""
        if self.kind == "all":
            return inventory
        if self.kind == "none":
            return replace(inventory, gpus=(), reason="--gpus none")
        if self.kind == "count":
            if self.count > len(inventory.gpus):
                raise UsageError(f"--gpus {self.count}: only {len(inventory.gpus)} GPU(s) visible")
            return replace(inventory, gpus=inventory.gpus[: self.count])
        migs = [part for part in self.ids if part.upper().startswith("MIG-")]
        if migs:
            # A slice's memory and compute are not in the inventory, so no profile could be checked.
            raise UsageError(
                f"--gpus {migs[0]}: a MIG instance; nimctl runs profiles on whole GPUs",
                hint="give the GPU's index or its GPU- UUID (nimctl gpus lists them)",
            )
        # NVML reports UUIDs upper-case ("GPU-3f..."); people copy them from anywhere.
        wanted = {part.lower() for part in self.ids}
        chosen = tuple(
            gpu for gpu in inventory.gpus if str(gpu.index) in wanted or (gpu.uuid or "").lower() in wanted
        )
        if len(chosen) != len(self.ids):
            known = ", ".join(str(gpu.index) for gpu in inventory.gpus) or "none"
            raise UsageError(f"--gpus {','.join(self.ids)}: no such GPU (visible: {known})")
        return replace(inventory, gpus=chosen)
