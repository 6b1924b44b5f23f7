"""CSLTrainer: scores of a copy of the callback's tracker during training (docs/integrations.md),
each equal to the per-sample cross-entropy of the logits the model gave so far, summed; the
training goes on recording, and the final scores are the sum over all epochs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from _id_net import IdNet  # noqa: E402
from transformers import TrainerCallback, TrainingArguments  # noqa: E402

from harness.integrations.transformers import CSLTrainer, CSLTrainerCallback, with_sample_index  # noqa: E402

N, EPOCHS = 24, 2


class _Peek(TrainerCallback):
    def __init__(self, csl: CSLTrainerCallback, net: IdNet) -> None:
        self.csl, self.net, self.peeks = csl, net, []

    def on_epoch_end(self, args, state, control, **kwargs) -> None:  # noqa: ANN001, ANN003  # the Trainer's hook
        self.peeks.append((self.csl.tracker.copy().scores()["csl"].to_numpy(), self.net.own.copy()))


def test_a_copy_of_the_hf_callbacks_tracker_scores_each_epoch_and_training_goes_on(tmp_path) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.arange(N, dtype=torch.float32)[:, None], torch.randn(N, 4, generator=gen)], 1)
    y = torch.randint(0, 3, (N,), generator=gen)
    net = IdNet(y)
    csl = CSLTrainerCallback(N)
    peek = _Peek(csl, net)
    args = TrainingArguments(str(tmp_path), use_cpu=True, per_device_train_batch_size=8, num_train_epochs=EPOCHS,
                             report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True)
    rows = [{"x": x[i], "labels": int(y[i])} for i in range(N)]
    CSLTrainer(model=net, args=args, train_dataset=with_sample_index(rows), callbacks=[csl, peek]).train()
    assert len(peek.peeks) == EPOCHS
    for peeked, own in peek.peeks:
        np.testing.assert_array_equal(peeked, own)
    np.testing.assert_array_equal(csl.scores()["csl"].to_numpy(), net.own)
    assert (peek.peeks[1][0] > peek.peeks[0][0]).all()
