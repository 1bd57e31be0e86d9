"""What machine measured a result: CPU model and torch's kernel path, beside the versions.

Training runs are bit-reproducible on one machine, not across CPUs: another CPU (or
another SIMD kernel path) rounds differently from the first steps on, and the chaotic
training turns that into a different run. Figures are comparable within one machine.
"""

from __future__ import annotations

import platform
import time
from pathlib import Path
from typing import Any


def cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else what ``platform`` knows."""
    try:
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, sep, value = line.partition(":")
            if sep and key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def machine_record() -> dict[str, Any]:
    """The JSON-able description of this machine that a result file carries."""
    import torch  # here, not at the top: the report renders these records without torch

    return {"python": platform.python_version(), "torch": torch.__version__,
            "platform": platform.platform(), "cpu": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "cpu_threads_used": 1,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "measured_at": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def describe(machine: dict[str, Any]) -> str:
    """One line for a report: platform, CPU and kernel path (older files lack the last two)."""
    cpu = machine.get("cpu")
    path = machine.get("cpu_capability")
    extra = "".join(f", {part}" for part in (cpu, path and f"{path} kernels") if part)
    return f"{machine['platform']}{extra}, torch {machine['torch']}"
