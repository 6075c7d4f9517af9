"""Measured memory bandwidth of the host, for the roofline where no datasheet figure applies.

A generic Linux host (`devices.yaml` device `cpu`) has no single bandwidth spec, so the roofline
would have no bound. Instead every run measures one: each of `threads` threads copies its own pair
of buffers (numpy releases the GIL in the copy), counting bytes read plus bytes written as STREAM's
copy kernel does, and the best of `repeats` passes is kept. Buffers are far larger than any last-level
cache, so the figure is DRAM's. It is an achievable copy bandwidth, at or below the hardware's peak,
so a fraction of the bound computed from it is an upper estimate of the fraction of peak; the
record says which method produced it.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

METHOD = "numpy copy, one buffer pair per thread, (read + write bytes) / time, best pass"
BUFFER_BYTES_PER_THREAD = 128 * 2 ** 20
REPEATS = 5


def measure_memory_bandwidth(threads: int, buffer_bytes: int = BUFFER_BYTES_PER_THREAD,
                             repeats: int = REPEATS) -> dict[str, Any]:
    """{'gb_per_s', 'method', 'threads', 'buffer_bytes_per_thread', 'passes_gb_per_s'} of this host."""
    count = max(1, threads)
    sources = [np.ones(buffer_bytes // 8, dtype=np.float64) for _ in range(count)]
    targets = [np.empty_like(src) for src in sources]

    def copy(i: int) -> None:
        np.copyto(targets[i], sources[i])

    passes = []
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(copy, range(count)))  # first touch: page faults stay out of the timed passes
        for _ in range(repeats):
            start = time.perf_counter()
            list(pool.map(copy, range(count)))
            elapsed = time.perf_counter() - start
            passes.append(2 * count * sources[0].nbytes / elapsed / 1e9)
    return {"gb_per_s": round(max(passes), 2), "method": METHOD, "threads": count,
            "buffer_bytes_per_thread": sources[0].nbytes, "passes_gb_per_s": [round(p, 2) for p in passes]}
