"""The suggested label of a user's loop: the suspects task's recorder (`train_class_prob`) and its
rule (`harness.recorders.class_prob`), fed the logits `update()` already gets.

A memorised wrong label is what the final model predicts, so the prediction suggests nothing; the
softmax summed over the training pass keeps what the sample looked like before it was memorised.
The sums are (N, C) floats, twice: the closed epochs' and the open epoch's, which
`SampleTracker.discard_epoch` must be able to drop (the recorder only adds). ImageNet's
1.28 M x 1,000 would hold 10 GB on the device, so by default they are recorded only up to
`DEFAULT_LIMIT_BYTES`; `SampleTracker(suggest=True)` records them at any size, `suggest=False` never.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError
from harness.recorders import RunContext, build_recorder
from harness.recorders.class_prob import SUGGEST

#: the default bound on the device memory of the sums (both copies): 1 GiB, N x C <= 2^27
DEFAULT_LIMIT_BYTES = 1 << 30
#: what `suspects()` says once when update() never passed logits
LOSSES_ONLY = ("update() got losses= without logits=, so the training pass's class probabilities were not recorded; "
               "pass logits= and labels= to every update() for them")


def sums_bytes(n: int, classes: int) -> int:
    """Device bytes of the sums: two float32 (n + 1, C) tensors and two (n + 1,) counts."""
    return 2 * 4 * (n + 1) * (classes + 1)


def why_not_recorded(suggest: bool | None, running_sums: bool, n: int, classes: int | None) -> str | None:
    """At the first recorded batch (`classes`: its logits' classes, None without logits): None to
    record the sums, else why not -- "" when there is nothing to say (`suggest=False`, or the size
    bound, which is said here, at once, so a long run can be restarted with `suggest=True`)."""
    if suggest is False:
        return ""
    if classes is None:
        return LOSSES_ONLY
    if suggest is None and running_sums:
        return ("running_sums=True keeps O(N) memory, and the class probabilities are N x C: pass "
                "SampleTracker(..., suggest=True) to record them too")
    size = sums_bytes(n, classes)
    if suggest is None and size > DEFAULT_LIMIT_BYTES:
        warnings.warn(f"SampleTracker: the suggested label's per-class sums of {n} samples x {classes} classes would "
                      f"take {size / 2**30:.1f} GiB on the device (more than the default "
                      f"{DEFAULT_LIMIT_BYTES / 2**30:.0f} GiB), so they are not recorded and suspects() has no "
                      f"suggested label; pass SampleTracker(..., suggest=True) to record them anyway, or "
                      f"suggest=False to say no", UserWarning, stacklevel=5)
        return ""
    return None


class ClassProbSums:
    """`train_class_prob`'s sums for a tracker: `epoch` (the recorder itself) holds the open epoch's
    presentations, `closed` the closed epochs'. Each sample is presented once per epoch (repeats go
    to the scratch row n), so adding an epoch into `closed` gives the sums the recorder would hold
    alone, bit for bit."""

    def __init__(self, n: int, classes: int, device: torch.device) -> None:
        self.n, self.classes = n, classes
        ctx = RunContext(None, None, None, 0, device, samples=n + 1, classes=classes)  # + the scratch row
        self.epoch = build_recorder(SUGGEST, ctx)
        self.closed = {name: torch.zeros_like(self._buf(name)) for name in self.epoch.buffers}

    def _buf(self, name: str) -> torch.Tensor:
        buf = self.epoch.buffers[name]
        assert isinstance(buf, torch.Tensor)  # (N, C) and (N,): no per-epoch rows
        return buf

    def on_batch(self, slot: torch.Tensor, logits: torch.Tensor) -> None:
        """A recorded batch's logits at their slots (`TrackedSignals.record_batch`'s)."""
        self.epoch.on_batch(0, slot, logits, logits.new_empty(0), None)  # the recorder reads the logits only

    def close_epoch(self) -> None:
        for name, total in self.closed.items():
            buf = self._buf(name)
            total += buf
            buf.zero_()

    def discard_epoch(self) -> None:
        for name in self.closed:
            self._buf(name).zero_()

    def host(self) -> dict[str, np.ndarray]:
        """The closed epochs' sums of the n samples (the scratch row dropped), as the recorder's arrays."""
        return {name: total[: self.n].cpu().numpy() for name, total in self.closed.items()}

    def state(self) -> dict[str, Any]:
        return {"classes": self.classes,
                "closed": {k: v.detach().to("cpu", copy=True) for k, v in self.closed.items()},
                "epoch": {k: self._buf(k).detach().to("cpu", copy=True) for k in self.closed}}

    @classmethod
    def restored(cls, state: Any, n: int, classes: Any, device: torch.device) -> ClassProbSums:
        """Sums from `state()`, on `device` (the meta device: a check of the state, no memory)."""
        if not isinstance(state, Mapping) or state.get("classes") != classes or not isinstance(classes, int):
            raise _damaged(f"class probabilities for {state.get('classes') if isinstance(state, Mapping) else state!r} "
                           f"classes, the state's logits have {classes!r}")
        sums = cls(n, classes, device)
        for part, targets in (("closed", sums.closed), ("epoch", {k: sums._buf(k) for k in sums.closed})):
            saved = state.get(part)
            if not isinstance(saved, Mapping) or set(saved) != set(targets):
                raise _damaged(f"class probability {part} sums are not {sorted(targets)}")
            for name, target in targets.items():
                value = saved[name]
                if (not isinstance(value, torch.Tensor) or value.shape != target.shape
                        or value.dtype != target.dtype):
                    raise _damaged(f"class probability {part} {name} does not fit {tuple(target.shape)} "
                                   f"{target.dtype}")
                if device.type != "meta":
                    target.copy_(value)
        return sums


def _damaged(what: str) -> HarnessError:
    return HarnessError(f"load_state_dict(): the state is incomplete or damaged: {what}; pass what state_dict() "
                        f"returned, unchanged")


def class_names(classes: Sequence[str] | None, num_classes: int) -> np.ndarray:
    """`suggested_name`'s names: `classes`, else the class ids as text (as the plots' captions show them)."""
    return np.asarray(list(classes) if classes is not None else [str(c) for c in range(num_classes)], dtype=object)

