"""CSLTrainer with int32 labels, as a torch-formatted dataset's int32 column gives them (the default
collator stacks the rows' tensors as they are): its own per-sample cross-entropy stopped the run with
torch's "expected target dtype to be Long or Byte, but got Int", a traceback where the tracker takes
integer labels of any width. Now they are class ids like int64 ones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

pytest.importorskip("transformers")

from _id_net import IdNet  # noqa: E402
from transformers import TrainingArguments  # noqa: E402

from harness.integrations._hf_batch import per_sample_cross_entropy  # noqa: E402
from harness.integrations.transformers import CSLTrainer, CSLTrainerCallback, with_sample_index  # noqa: E402

N = 16


@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.int8])
def test_narrow_integer_labels_give_the_int64_losses(dtype: torch.dtype) -> None:
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.5]])
    want = nn.functional.cross_entropy(logits, torch.tensor([2, 1]), reduction="none")
    torch.testing.assert_close(per_sample_cross_entropy(logits, torch.tensor([2, 1], dtype=dtype)), want)


def test_cslt_trainer_trains_and_scores_on_int32_labels(tmp_path) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.cat([torch.arange(N, dtype=torch.float32)[:, None], torch.randn(N, 4, generator=gen)], 1)
    y = torch.randint(0, 3, (N,), generator=gen)
    net = IdNet(y)
    csl = CSLTrainerCallback(N)
    args = TrainingArguments(str(tmp_path), use_cpu=True, per_device_train_batch_size=8, num_train_epochs=1,
                             report_to=[], save_strategy="no", logging_strategy="no", disable_tqdm=True)
    rows = [{"x": x[i], "labels": y[i].to(torch.int32)} for i in range(N)]  # a torch-formatted int32 column
    CSLTrainer(model=net, args=args, train_dataset=with_sample_index(rows), callbacks=[csl]).train()
    np.testing.assert_allclose(csl.tracker.scores()["csl"].to_numpy(), net.own, rtol=1e-5)
    assert (net.own > 0).all()
