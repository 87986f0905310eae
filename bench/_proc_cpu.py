"""CPU-seconds of another process, from its own accounting in /proc (Linux)."""

from __future__ import annotations

import os


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of every thread of ``pid`` so far (children not included)."""
    with open(f"/proc/{pid}/stat") as stat:
        raw = stat.read()
    fields = raw.rsplit(")", 1)[1].split()  # the command name may hold spaces and ')'
    utime, stime = int(fields[11]), int(fields[12])
    return (utime + stime) / os.sysconf("SC_CLK_TCK")
