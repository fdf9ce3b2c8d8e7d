"""The CPU cores a process may use: what the decoding at setup and the DataLoader path's workers are sized by."""

from __future__ import annotations

import os


def available_cores() -> int:
    """The cores this process may run on: its affinity where the system tells it (as SLURM and ``taskset`` set it),
    else every core of the machine."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
