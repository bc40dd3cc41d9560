"""The scoring process's intra-op threads: the rule against decode workers and busy cores, set and given back."""

from __future__ import annotations

import subprocess
import sys

import pytest

from osteo_batch.scoring.threads import DECODE_SHARE, auto_threads, busy_cores, cores, intra_op_threads


def test_the_rule_leaves_the_decoders_their_share_and_others_their_cores():
    assert auto_threads(2, n_cores=2, busy=0.0) == 2, "an idle 2-core machine: the model takes both"
    assert auto_threads(1, n_cores=2, busy=1.7) == 1, "another job holds a core and more: one thread"
    assert auto_threads(2, n_cores=2, busy=2.0) == 1, "never fewer than one"
    assert auto_threads(2, n_cores=16, busy=0.0) == 14, "a free 16-core node: the decoders get their share"
    assert auto_threads(1, n_cores=16, busy=0.0) == 15, "no more than the workers there are"
    assert auto_threads(0, n_cores=16, busy=4.0) == 12, "no workers: decoding happens between forwards"
    assert auto_threads(8, n_cores=16, busy=0.0) == round(16 - 16 * DECODE_SHARE)
    assert auto_threads(2, "cuda", n_cores=16, busy=0.0) is None, "a GPU's host threads are left alone"
    assert 1 <= auto_threads(2) <= cores()


def test_busy_cores_sees_a_process_that_spins():
    spin = subprocess.Popen([sys.executable, "-c", "import time\nt = time.time()\nwhile time.time() - t < 3: pass"])
    try:
        busy = busy_cores(0.5)
    finally:
        spin.kill()
        spin.wait()
    assert 0.5 <= busy <= cores() + 1e-6


def test_threads_are_set_inside_and_given_back_after():
    import torch

    before = torch.get_num_threads()
    with intra_op_threads(1) as n:
        assert n == torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), intra_op_threads(1):
        raise RuntimeError("a failed batch")
    assert torch.get_num_threads() == before, "given back when scoring fails too"
    with intra_op_threads(None) as n:
        assert n == before
