"""Intra-op threads of the scoring process, set against the decode workers and whatever else holds the cores.

Why not simply all cores: the DataLoader's workers (one thread each) and the
model's intra-op threads share them, and an OpenMP region waits for its
slowest thread, so a model thread that shares its core with a decoder or
another process holds the whole forward back. Measured with
``benchmarks/threads_split.py`` (dinov2_small, 518 px, random weights, the
archive profile: 12-bit 2500x2048-3000x2500, 70% JPEG 2000 lossless; 24
images, batch 4, precisions and splits interleaved, 3 repeats, medians, in
images/s) on 2026-12-01, on this project's 2-core Xeon (Sapphire Rapids,
AMX), once while other jobs shared it (load average 5-8) and once idle:

=================  =========  =========  =========  =========
workers x threads  1 x 2      1 x 1      2 x 2      2 x 1
=================  =========  =========  =========  =========
idle, bf16         **2.81**   1.73       2.51       1.61
idle, fp32         **1.35**   0.75       1.21       0.70
shared, bf16       0.49       0.77       0.41       **0.79**
shared, fp32       0.39       **0.53**   0.33       0.49
=================  =========  =========  =========  =========

Idle, two threads won every repeat (medians 1.6-1.8x one thread); shared,
one thread won 11 repeats of 12 (medians 1.4-1.9x two threads). The model
alone says the same: bf16 2.73 images/s on two threads and 1.69 on one idle,
0.64 and 1.61 shared. So the right count depends on what else holds the
cores *now*, and the rule measures it: the cores busy over a quarter of a
second (``/proc/stat``) at the start of a shard are the others'; of the
cores left, the decoders get their share (:data:`DECODE_SHARE`), the model
the rest, at least one thread.

The decode share: idle, decoding cost 1/9.4 s of one core per image and the
model 1/1.69 s (bf16) or 1/1.06 s (fp32) on one thread, so a balanced CPU
pipeline spends 10-15% of its core-seconds decoding (0.30 of a core at the
2.81 images/s above). With this rule the 2-core machine runs two threads
idle and one while others hold more than about a quarter of a core (the rule
rounds the cores left; where between the two measured ends two threads stop
paying was not measured); a free 16-core node with 2 workers gives the
model 14. A model much smaller than its decode (the demo
backbone) is decode-bound whatever its threads; on a GPU the host threads
only feed it (left alone). 1 worker x 2 threads beat 2 x 2 here (2.81 against
2.51): with a model this slow one worker keeps up.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import Iterator

#: of the cores nobody else holds, what the decode workers take in a CPU pipeline (measured: 10-15%)
DECODE_SHARE = 0.15
#: how long the cores are watched before a shard picks its threads
BUSY_SAMPLE_S = 0.25


def cores() -> int:
    """CPU cores this process may run on (its affinity mask, which containers and ``taskset`` narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs from /proc/stat, or None where there is none."""
    try:
        with open("/proc/stat") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def busy_cores(sample_s: float = BUSY_SAMPLE_S) -> float:
    """Cores other processes keep busy, over ``sample_s`` (this process sleeps meanwhile); 0 where unknown.

    Counted over the whole machine, scaled to the cores this process may use.
    """
    a = _cpu_times()
    if a is None:
        return 0.0
    time.sleep(sample_s)
    b = _cpu_times()
    if b is None or b[1] <= a[1]:
        return 0.0
    return max(0.0, (b[0] - a[0]) / (b[1] - a[1])) * cores()


def auto_threads(workers: int, device: str = "cpu", n_cores: int | None = None,
                 busy: float | None = None) -> int | None:
    """Intra-op threads for scoring beside ``workers`` decode workers (None: leave torch's setting alone).

    ``busy``: cores others hold (None: :func:`busy_cores` measures them now).
    """
    if device.startswith("cuda"):
        return None  # the model runs on the GPU: the host threads only feed it
    n = n_cores or cores()
    free = max(0.0, n - (busy_cores() if busy is None else busy))
    decode = min(float(workers), free * DECODE_SHARE)
    return max(1, min(n, round(free - decode)))


@contextlib.contextmanager
def intra_op_threads(n: int | None) -> Iterator[int]:
    """torch's intra-op threads set to ``n`` inside the block (None: unchanged), restored after it."""
    import torch

    before = torch.get_num_threads()
    if n is not None and n != before:
        torch.set_num_threads(n)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
