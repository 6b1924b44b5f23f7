"""A tracker's eval pass keeps the (N, C) probabilities it may have to put back in host memory: a second copy
on the GPU (5 GB at ImageNet-1k) could run a run that fitted before out of memory. Runs where CUDA is."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from harness.tracker import SampleTracker

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_cuda_eval_pass_keeps_its_undo_copy_on_the_host(monkeypatch) -> None:
    from harness.tracker import eval_passes

    devices: list[str] = []
    real = eval_passes.EvalPasses.kept

    def kept(self, epoch: int):
        copies = real(self, epoch)
        devices.extend(v.device.type for v in copies.values() if isinstance(v, torch.Tensor))
        return copies

    monkeypatch.setattr(eval_passes.EvalPasses, "kept", kept)
    n, classes = 64, 4
    x, y = torch.randn(n, 8, device="cuda"), torch.arange(n, device="cuda") % classes
    model = nn.Linear(8, classes).cuda()
    tracker = SampleTracker(n)
    for _ in range(2):
        tracker.update(torch.arange(n, device="cuda"), logits=model(x), labels=y)
        tracker.end_epoch()
        tracker.eval_epoch(model, (x, y))
    tracker.eval_epoch(model, (x, y))  # a repeat: what it replaces is kept
    assert devices and set(devices) == {"cpu"}
