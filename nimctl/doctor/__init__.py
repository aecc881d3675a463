"""``nimctl doctor``: whether ``nimctl run MODEL`` can work on this machine, item by item.

    report = run_doctor(Request(model="tiny-vlm"))      # Probes() reads this machine
    report.failed, report.to_dict()

Each item is a :class:`Check` with a verdict (ok, warn, fail, skip), what was found and the fix.
The probes (NVML, the Docker daemon's address, /dev/shm, the clock, the user) are injectable so
that tests build machines that fail each item.
"""

from __future__ import annotations

from nimctl.doctor.probes import Probes
from nimctl.doctor.report import Check, Report, Verdict
from nimctl.doctor.runner import run_doctor
from nimctl.doctor.target import Request

__all__ = ["Check", "Probes", "Report", "Request", "Verdict", "run_doctor"]
