"""Worker of test_gather_uneven_batches_and_padding_duplicates (tests/test_integrations_lightning.py),
in a module of its own so that each spawned process imports torch and the tracker, not Lightning."""

from __future__ import annotations

import numpy as np
import torch

from harness import SampleTracker
from harness.integrations._common import DistributedRecorder


def gather_worker(rank: int, world: int, init: str, out: str) -> None:
    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        tracker = SampleTracker(7, proxies=["csl"])
        rec = DistributedRecorder(tracker)
        # rank 0 sees 3 samples, rank 1 two, then a padded batch repeating sample 0 (a DistributedSampler's padding)
        shards = {0: [([0, 2, 4], [1.0, 3.0, 5.0]), ([6], [7.0])], 1: [([1, 3], [2.0, 4.0]), ([5, 0], [6.0, 100.0])]}
        for epoch in range(2):
            for idx, loss in shards[rank]:
                rec.update(torch.tensor(idx), losses=torch.tensor(loss) * (epoch + 1))
            rec.end_epoch()
        if rank == 0:
            np.save(out, tracker.scores()["csl"].to_numpy())
    finally:
        torch.distributed.destroy_process_group()
