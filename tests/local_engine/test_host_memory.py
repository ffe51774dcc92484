"""malloc tuning: a freed step-sized tensor is reused instead of being faulted in again.

Counts minor page faults (not time) of a loop shaped like a prefill step: several 24 MB blocks
(the size of the MLP activations) live at once, written, then all freed; in fresh interpreters
with and without ``tune_malloc``. By default glibc trims the freed heap top back to the kernel
and the next step faults it all in again.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only"
)

LOOP = textwrap.dedent(
    """
    import ctypes, resource, sys
    from local_engine.host_memory import tune_malloc
    if sys.argv[1] == "tuned":
        assert tune_malloc()
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    size = 24 * 1024 * 1024
    def step():
        blocks = [libc.malloc(size) for _ in range(4)]
        for p in blocks:
            ctypes.memset(p, 1, size)  # touch every page, as a kernel writing activations does
        for p in blocks:
            libc.free(p)
    step()  # first use: these faults are paid either way
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(8):
        step()
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(mode: str) -> int:
    out = subprocess.run(
        [sys.executable, "-c", LOOP, mode], capture_output=True, text=True, check=True
    )
    return int(out.stdout.strip())


def test_tuned_malloc_reuses_freed_tensor_memory() -> None:
    default, tuned = _faults("default"), _faults("tuned")
    pages = 8 * 4 * 24 * 1024 * 1024 // 4096
    assert default > pages // 2, (
        default,
        tuned,
    )  # glibc unmapped each block on free and faulted it in again
    assert tuned < pages // 50, (default, tuned)


def test_tune_malloc_is_idempotent() -> None:
    from local_engine.host_memory import tune_malloc

    assert tune_malloc() is tune_malloc()
