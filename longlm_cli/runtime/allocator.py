"""How the process's C allocator gives freed memory back to the system, set once before a model is loaded.

glibc's malloc serves a large block from its own heap once a block of that size has been freed (its mmap
threshold rises to the largest block freed, up to 32 MiB). A model's loading and a prefill free and allocate
blocks of a few MiB by the hundred (packed weights, activations of a chunk), so the heap grows with holes that
stay resident. With the threshold held at MMAP_THRESHOLD, every block that large is its own mapping, given back
at once when freed. Measured on the embedded model in int4 at 8k tokens, two rounds each: peak RSS 0.79 and 0.83
GiB against 0.83 and 0.91 by default, speed within the rounds' noise (benchmarks/results/malloc-threshold.txt,
docs/quantized.md). Elsewhere (macOS, musl) nothing is changed.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # glibc's mallopt parameters
M_ARENA_MAX = -8
MMAP_THRESHOLD = 1 << 20  # bytes: a block this large or larger is mapped on its own
SERVER_ARENAS = 2  # heaps for a server's threads (glibc's default: up to 8 per core, each keeping what it freed)


def give_back_freed_blocks(threshold: int = MMAP_THRESHOLD) -> bool:
    """Hold glibc's mmap threshold at ``threshold`` bytes for this process; whether it was set."""
    return _mallopt(M_MMAP_THRESHOLD, threshold)


def share_heaps(arenas: int = SERVER_ARENAS) -> bool:
    """At most ``arenas`` malloc heaps for the process's threads (a server runs requests on a pool of worker
    threads, and each new one would get a heap of its own that keeps what it freed); whether it was set."""
    return _mallopt(M_ARENA_MAX, arenas)


def give_back_free_heap() -> bool:
    """Return the free pages at the top and inside of every malloc heap to the system (glibc's malloc_trim); whether
    anything was given back. A long-running server calls it after each request: blocks under the mmap threshold
    freed by a long prefill stay resident in the heaps otherwise, and the next short request does not reuse them."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        malloc_trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return False
    malloc_trim.argtypes, malloc_trim.restype = [ctypes.c_size_t], ctypes.c_int
    return malloc_trim(0) == 1


def _mallopt(parameter: int, value: int) -> bool:
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # no glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return mallopt(parameter, value) == 1
