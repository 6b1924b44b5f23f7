"""The one rule for "is this sample predicted as its label?", shared by every signal and accuracy.

`logits.argmax(-1) == labels` hands a tie to the lower class index, so a sample whose label's logit
ties another class's would count as correct when its label is the lower index and as wrong
otherwise: a bias by class index. bf16 logits (~3 significant digits) tie the top two classes on
~0.1 % of samples per epoch, enough to move forgetting counts and learning times.
"""

from __future__ import annotations

import torch


def predicts_label(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Bool (...): the label's logit lies strictly above each of the C − 1 others, for logits (..., C)
    and labels broadcast to their leading shape (an ensemble's (K, B, C) with (B,) labels too).

    A tie is not a prediction of the label whatever the class order, so the answer does not depend
    on how classes are numbered. A NaN anywhere in a row gives False (a comparison with NaN is
    false, so fewer than C − 1 logits lie below the label's; with C = 1, the label's own logit is
    checked): argmax takes a NaN for the maximum, so `argmax == label` called a row correct when its
    first NaN sat at the label. Four elementwise operations, as cheap as argmax-compare at a batch
    of 512 (this runs on every training batch of the tracker). Labels may be of any integer dtype
    (cast to int64 for gather) and must be class ids in [0, C), checked before by every caller, as
    its loss already requires: one outside fails in gather (on a GPU, a device-side assert).

    The labels are expanded to the leading shape before the gather: gather itself does not
    broadcast, so (1, B) labels of a (K, B, C) ensemble (or one label for a batch) read member 0's
    (row 0's) logit and compared every other member's (row's) logits with it."""
    if labels.dtype != torch.int64 or labels.device != logits.device:
        labels = labels.to(device=logits.device, dtype=torch.int64)
    if labels.shape != logits.shape[:-1]:
        labels = labels.expand(logits.shape[:-1])
    given = logits.gather(-1, labels.unsqueeze(-1))
    if logits.shape[-1] == 1:  # no other class: correct unless the logit is NaN
        return (given == given).squeeze(-1)
    return (logits < given).sum(-1) == logits.shape[-1] - 1
