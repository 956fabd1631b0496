"""How many CPUs this process may use: the one answer for every thread pool in Portrait."""

from __future__ import annotations

import os
from functools import cache


@cache
def available_cores() -> int:
    """CPUs in this process's affinity mask (``taskset`` and cpusets count, unlike ``os.cpu_count``)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def idle_cores() -> int:
    """Available cores not busy with other work (1-minute load average), at least one."""
    cores = available_cores()
    return max(1, min(cores, int(cores - os.getloadavg()[0] + 0.5)))
