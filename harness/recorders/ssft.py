"""SSFT's signal: after every epoch of a run's second phase, whether each first-phase sample is
still classified as its (trained-on) label, in eval mode.

Only second-phase epochs are recorded: the forgetting the proxy measures happens while the network
trains on the other split, so phase 1 needs no pass of its own (its cost is the run's training).
"""

from __future__ import annotations

from torch import nn

from harness.predictions import predicts_label
from harness.recorders.base import Recorder, RunContext, eval_batches, register_recorder


@register_recorder
class SSFTCorrect(Recorder):
    name = "ssft_correct"
    description = "eval-mode correctness of the first-phase samples after every second-phase epoch"
    phases = (2,)
    #: called twice with the same arguments, a call leaves what one call leaves, so the FLOP counter
    #: gets an execution of its own (`harness.timing.Meter`)
    repeatable = True

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        # phase 2 trains for as many epochs as phase 1; samples outside phase 1 stay NaN
        self.buffer("correct", (ctx.epochs, ctx.n), fill=float("nan"))

    def on_epoch_end(self, epoch: int, phase: int, model: nn.Module | None) -> None:
        data, first_phase = self.ctx.data, self.ctx.train_idx
        # a two-phase run is the harness's own (`train_run`), which has all three
        assert data is not None and first_phase is not None and model is not None
        row = self.buffers["correct"][epoch]
        y = data.y
        for idx, logits in eval_batches(model, data, first_phase, self.ctx.eval_batch_size):
            row.index_copy_(0, idx, predicts_label(logits, y[idx]).float())
