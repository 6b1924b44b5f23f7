"""The process's global random generators, put back after code that may draw from them.

memprox runs inside users' processes (the tracker's eval passes, `run_experiment` in a notebook),
where torch's, numpy's and Python's global generators belong to the user's training: a draw left
behind changes their next shuffle or dropout mask.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import numpy as np
import torch


@contextmanager
def global_rngs_kept(cuda_devices: Iterable[int] = ()) -> Iterator[None]:
    """Torch's CPU generator and those of `cuda_devices`, numpy's and Python's global generators
    as they were before the block, also when it raises."""
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        with torch.random.fork_rng(devices=list(cuda_devices)):
            yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
