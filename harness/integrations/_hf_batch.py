"""What `CSLTrainer.compute_loss` reads from a batch and from the model's output to compute each
sample's cross-entropy: the labels (under `args.label_names`, `labels` or `label`), the logits (a
tensor, a mapping's `logits` or a tuple's first entry), and the checks that they are one class id
and one row of class scores per sample. Part of `harness.integrations.transformers`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from harness.errors import HarnessError

__all__ = ["IGNORED", "batch_labels", "batch_logits", "batch_loss", "per_sample_cross_entropy"]


def batch_labels(inputs: dict[str, Any], label_names: Sequence[str] | None) -> torch.Tensor:
    """Pops the batch's labels from `inputs` (the model runs without them)."""
    labels = None
    for name in (*(label_names or ()), "labels", "label"):
        if labels is None:
            labels = inputs.pop(name, None)
    if labels is None:
        raise HarnessError("CSLTrainer: the batch has no labels; the collator must give `labels` (a `label` "
                           "column becomes `labels` in the default collators, another one needs "
                           "args.label_names=[its name])")
    return labels


def batch_logits(outputs: Any) -> torch.Tensor:
    """The logits of a model's output: a tensor (a plain nn.Module), a mapping's `logits`, a tuple's first."""
    if isinstance(outputs, torch.Tensor):  # a plain nn.Module returning logits
        return outputs
    if isinstance(outputs, Mapping):
        found = outputs.get("logits")
        if found is None:
            raise HarnessError(f"CSLTrainer: the model's output has no logits (keys {sorted(outputs)}); it "
                               f"computes the per-sample cross-entropy from them: return `logits` (B, C)")
        return found
    return outputs[0]


#: The label Hugging Face's classification losses skip (`cross_entropy`'s default ignore_index).
IGNORED = -100


def per_sample_cross_entropy(logits: torch.Tensor, labels: torch.Tensor, training: bool = True) -> torch.Tensor:
    """(B,) cross-entropy of (B, C) logits against (B,) integer class ids. In training every id must
    be a class (a recorded loss of 0 would be a silently wrong csl); in evaluation a row labeled
    IGNORED (-100) gets 0, as the model's own loss skips it (`batch_loss`)."""
    if logits.dim() != 2 or labels.dim() != 1:
        raise HarnessError(f"CSLTrainer scores classification (logits (B, C), labels (B,)); got logits "
                           f"{tuple(logits.shape)} and labels {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise HarnessError(f"CSLTrainer scores classification: labels must be integer class ids, got "
                           f"{labels.dtype} (a regression head has no per-sample cross-entropy; cast class ids "
                           f"with dataset.cast_column(..., Value('int64')))")
    labels = labels.long()  # int32 / int16 ids (a torch-formatted dataset's column): cross_entropy takes int64
    # checked before the loss: on a GPU an id out of range (a negative one included) stops the process with
    # a device-side assert, and -100 (cross_entropy's ignore_index) was a training loss of 0, silently. One
    # host read of the batch's extremes per step (the Trainer's own loss check reads the GPU per step too).
    scored = labels if training else labels[labels != IGNORED]
    if len(scored):
        low, high = torch.stack(torch.aminmax(scored)).tolist()  # one host read
        if low < 0 or high >= logits.shape[1]:
            raise HarnessError(f"CSLTrainer: the batch's labels run from {low} to {high}, but the model has "
                               f"{logits.shape[1]} outputs (class ids 0..{logits.shape[1] - 1}); drop unlabeled "
                               f"rows (-1) and make the model with num_labels = the number of classes")
    return nn.functional.cross_entropy(logits, labels, reduction="none")


def batch_loss(losses: torch.Tensor, labels: torch.Tensor, training: bool = True) -> torch.Tensor:
    """The batch's loss: the mean of `losses`; in evaluation over the rows not labeled IGNORED, as a
    Hugging Face classification model's own loss (an eval set may mark rows so)."""
    if training:
        return losses.mean()
    return losses.sum() / (labels != IGNORED).sum().clamp(min=1)
