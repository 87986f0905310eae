"""shared.memory: freed memory is kept and reused, so a repeated large allocation stops faulting."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="mallopt is glibc's",
)

# Buffers of 0.5-3 MiB (below numpy's huge-page advice), all alive at once like a forward pass's
# activations, then freed; in a thread other than the main one (as the victim's model thread);
# two warm-up rounds, then prints the page faults of 4 more.
_PROBE = """
import resource, sys, threading
import numpy as np
from shared.memory import reuse_freed_memory
if sys.argv[1] == "reuse":
    assert reuse_freed_memory()
sizes = [1 << 19, 1 << 20, 2 << 20, 3 << 20]
faults = []
def batch():
    buffers = [np.ones(size, np.uint8) for size in sizes]
    del buffers
def rounds():
    batch(); batch()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        batch()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=rounds)
thread.start()
thread.join()
print(faults[0])
"""


def _faults(mode: str) -> int:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, mode], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    return int(done.stdout.strip())


def test_reused_memory_does_not_fault_again_while_default_malloc_does() -> None:
    pages = 4 * (13 << 19) // 4096  # every page of the 4 rounds' buffers
    assert _faults("default") > pages // 2  # glibc maps the blocks afresh each round
    assert _faults("reuse") < pages // 50  # the heap keeps them: each round reuses its pages
