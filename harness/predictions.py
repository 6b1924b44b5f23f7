"""The one rule for "is this sample predicted as its label?", shared by every signal and accuracy.

`logits.argmax(-1) == labels` hands a tie to the lower class index, so a sample whose label's logit
ties another class's would count as correct when its label is the lower index and as wrong
otherwise: a bias by class index. bf16 logits (~3 significant digits) tie the top two classes on
~0.1 % of samples per epoch, enough to move forgetting counts and learning times.
"""

from __future__ import annotations

import torch


def predicts_label(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Bool (...): the label's logit lies strictly above every other class's, for logits (..., C)
    and labels (...) of any leading shape (an ensemble's (K, B, C) too).

    A tie is not a prediction of the label whatever the class order, so the answer does not depend
    on how classes are numbered. A NaN anywhere in a row gives False: argmax takes a NaN for the
    maximum, so `argmax == label` called a row correct when its first NaN sat at the label. The label
    is matched by comparison, not indexed, so a label outside [0, C) gives False (as argmax-compare
    did) instead of an out-of-bounds gather, which on a GPU kills the process."""
    is_label = torch.arange(logits.shape[-1], device=logits.device) == labels[..., None]
    low = torch.tensor(float("-inf"), dtype=logits.dtype, device=logits.device)
    given = torch.where(is_label, logits, low).amax(-1)
    others = torch.where(is_label, low, logits).amax(-1)
    return given > others
