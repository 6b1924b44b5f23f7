"""What `SampleTracker` accepts from a user's loop -- sample indices, batch tensors, labels, eval
data -- each checked, with an error that says what to pass instead of what torch rejected."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np
import torch

from harness.errors import HarnessError

_INDEX_DTYPES = frozenset({torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8})
_UNSIGNED_TORCH = frozenset({torch.uint16, torch.uint32, torch.uint64})


def unusable_logits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Rows (bool (B,)) whose logit signals are not defined: a NaN or +inf anywhere (the softmax is
    NaN) or a target logit that is not finite (an infinite loss). A -inf logit of another class is
    a class mask (classes absent from a task): its probability is 0 and the loss, margin, EL2N,
    probabilities and prediction stay finite, so the sample is recorded like any other."""
    target = logits.gather(-1, labels[..., None]).squeeze(-1)
    return ~(logits < float("inf")).all(-1) | ~torch.isfinite(target)


def not_a_tensor(what: str, value: Any) -> str:
    """update()'s refusal of `losses=` or `logits=` that is not a tensor: a model's whole output (a tuple,
    a dict, a Hugging Face `ModelOutput`) names the logits tensor to pass instead."""
    hint = f"; convert it with torch.as_tensor({what})"
    if isinstance(value, Mapping):
        keys = ", ".join(repr(k) for k in list(value)[:6])
        hint = f" (keys {keys}); pass the {what} tensor itself, e.g. out['logits'] or out.logits"
    elif isinstance(value, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in value):
        shapes = ", ".join(str(tuple(v.shape)) if isinstance(v, torch.Tensor) else type(v).__name__ for v in value[:6])
        hint = (f" of {shapes}; pass the {what} tensor itself (B, C for logits, B for losses), e.g. out[0] when the "
                f"model returns its logits first")
    return f"update(): losses and logits must be torch tensors; {what}= is a {type(value).__name__}{hint}"


def label_array(labels: Any, n: int) -> np.ndarray:
    """`SampleTracker(labels=...)` as n int64 class ids >= 0."""
    y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if y.shape != (n,) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise HarnessError(f"SampleTracker(labels=...) must be {n} integer class ids >= 0, got "
                           f"{y.dtype} {y.shape}")
    return y.astype(np.int64)


class Inputs:
    """Checks of one tracker's inputs on its device. Indices of CUDA tensors are checked on the
    device (`bad`, read at `end_epoch`): a per-batch check would sync the host every batch."""

    def __init__(self, n: int, device: torch.device) -> None:
        self.n = n
        self.device = device
        self.bad = torch.zeros((), dtype=torch.bool, device=device)

    def batch_indices(self, indices: Any, where: str = "update()") -> tuple[np.ndarray | None, torch.Tensor | None]:
        """The batch's sample indices as (host int64 array, None) when given on the host, range-checked
        at once (free), or (None, int64 tensor on the tracker's device) when given on a GPU, to be
        range-checked there by `on_device` (a check here would sync the host every batch)."""
        idx = indices if isinstance(indices, torch.Tensor) else self._from_numpy(_host_indices(indices, where))
        if idx.dtype in _UNSIGNED_TORCH and idx.dtype != torch.uint64:
            idx = idx.long()  # uint16 / uint32 ids always fit in int64
        if idx.dim() != 1 or idx.dtype not in _INDEX_DTYPES:
            fix = "; convert them with .long()" if idx.dtype == torch.uint64 else ""
            raise HarnessError(f"{where}: indices must be a 1-D integer tensor of sample indices, got {idx.dtype} "
                               f"{tuple(idx.shape)}{fix}; let the dataset return its index (see the WithIndex "
                               f"wrapper)")
        if idx.device.type == "cpu":
            host = idx.numpy() if idx.dtype == torch.int64 else idx.long().numpy()
            self.check_host_range(host)  # a host tensor: checking costs no device sync
            return host, None
        return None, idx.to(self.device, torch.int64)

    def on_device(self, idx: torch.Tensor, bad: torch.Tensor | None = None) -> torch.Tensor:
        """Device indices counted into `bad` (the training batches' own, `self.bad`, unless given) when outside
        [0, n) (raised at `end_epoch`, or at an eval pass's end, without a sync here) and clamped, so that
        recording them cannot fault."""
        flag = self.bad if bad is None else bad
        flag |= ((idx < 0) | (idx >= self.n)).any()
        return idx.clamp(0, self.n - 1)

    def indices(self, indices: Any, where: str = "update()", bad: torch.Tensor | None = None) -> torch.Tensor:
        """The batch's sample indices as int64 on the device, checked (`batch_indices`, `on_device`)."""
        host, idx = self.batch_indices(indices, where)
        if host is None:
            assert idx is not None  # the indices are on the host or on the device
            return self.on_device(idx, bad)
        return torch.from_numpy(host).to(self.device, torch.int64, non_blocking=True)

    def _from_numpy(self, array: np.ndarray) -> torch.Tensor:
        """Host indices as a tensor; unsigned ones (which torch indexes poorly) as int64 once they
        are known to be < n, so that uint64 values past int64 cannot wrap around."""
        if array.dtype.kind == "u":
            if array.size and int(array.max()) >= self.n:
                raise HarnessError(f"sample index {int(array.max())} is outside [0, {self.n}); pass the dataset's own "
                                   f"indices and n = len(dataset) (its final size, if it grows)")
            array = array.astype(np.int64)
        return torch.as_tensor(array)

    def check_host_range(self, host: np.ndarray) -> None:
        if np.count_nonzero(host.view(np.uint64) >= self.n):  # one pass: a negative index is huge unsigned
            low, high = int(host.min()), int(host.max())
            if low < 0 or high >= self.n:
                raise HarnessError(f"sample index {low if low < 0 else high} is outside [0, {self.n}); pass the "
                                   f"dataset's own indices and n = len(dataset) (its final size, if it grows)")

    @staticmethod
    def check_host_labels(labels: torch.Tensor, num_classes: int | None) -> None:
        """Host labels, range-checked at once (free on the host): recording them comes later
        (`harness.tracker.batch_log`), and the error belongs to this update(). Device labels are
        not read here (a sync per batch): `check_labels` reads them when the held batches are
        recorded, before the tracker computes a loss from them."""
        if labels.device.type == "cpu":
            check_labels(labels, num_classes)

    def tensor(self, what: str, value: Any, *, ndim: int, length: int, floating: bool) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise HarnessError(f"update(): {what} must be a torch tensor, got {type(value).__name__}; convert it "
                               f"with torch.as_tensor({what}, device={str(self.device)!r})")
        if value.dim() != ndim or value.shape[0] != length:
            want = f"({length},)" if ndim == 1 else f"({length}, classes)"
            hint = "; compute the loss with reduction='none'" if what == "losses" else ""
            if what == "labels" and value.dim() == 2:  # one-hot or soft targets (mixup, label smoothing by hand)
                hint = "; pass each sample's class id (one-hot rows: labels.argmax(1)), the label it is trained on"
            raise HarnessError(f"update(): {what} has shape {tuple(value.shape)} but must be {want} for "
                               f"{length} indices{hint}")
        if floating != value.dtype.is_floating_point or value.dtype == torch.bool:
            kind = "floating point" if floating else "integer class ids"
            fix = "; integral values: pass labels.long()" if what == "labels" else ""
            raise HarnessError(f"update(): {what} must be {kind}, got {value.dtype}{fix}")
        if not floating and value.dtype != torch.int64:
            value = value.long()  # uint8 / int32 class ids (numpy, collate): the losses and gathers need int64
        if value.device != self.device:
            raise HarnessError(f"update(): {what} is on {value.device} but the tracker's buffers are on "
                               f"{self.device}; keep the batch's tensors on one device")
        return value.detach()

    def eval_batches(self, data: Any, batch_size: int,
                     bad: torch.Tensor | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """(index, x, y) batches on the tracker's device, y as int64 class ids. Device indices outside [0, n)
        are counted into `bad`, the pass's own (`EvalPassState.bad_index`): in the training batches' flag they
        were written clamped to sample n - 1 and blamed on the next epoch's update()."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise HarnessError(f"eval_epoch(batch_size=...) must be an integer >= 1, got {batch_size!r}")
        dev = self.device
        if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
            x, y = data
            if len(x) != self.n or y.shape != (self.n,):
                raise HarnessError(f"eval_epoch(): (x, y) must hold all {self.n} samples in index order, got "
                                   f"{tuple(x.shape)} and {tuple(y.shape)}; or pass batches (x, y, index)")
            y = eval_labels(y, self.n)
            for start in range(0, self.n, int(batch_size)):
                stop = min(self.n, start + int(batch_size))
                yield (torch.arange(start, stop, device=dev), x[start:stop].to(dev), y[start:stop].to(dev))
            return
        for batch in data:
            if isinstance(batch, Mapping):  # WithIndex over a dataset of dicts: it cannot know which key is x
                keys = ", ".join(repr(k) for k in batch)
                raise HarnessError(f"eval_epoch(): batches must be (x, y, index), got a dict with keys {keys}; pass "
                                   f"a generator that picks them, e.g. ((b[X_KEY], b[Y_KEY], b['sample_index']) for "
                                   f"b in loader), or (x, y) tensors")
            if not (isinstance(batch, (tuple, list)) and len(batch) == 3):
                raise HarnessError("eval_epoch(): batches must be (x, y, index) -- wrap the dataset so it returns "
                                   "its index (harness.integrations.WithIndex(dataset)) -- or pass (x, y) tensors")
            x, y, idx = batch
            if _looks_reordered(x, y):  # (index, x, y): a float y is refused anyway; say why it is float
                raise HarnessError("eval_epoch(): a batch's first item is integer and its second floating point; "
                                   "batches are (x, y, index) in that order: a dataset yielding (index, x, y) needs "
                                   "((x, y, i) for i, x, y in loader)")
            idx = self.indices(idx, "eval_epoch()", bad)
            yield idx, x.to(dev), eval_labels(y, len(idx)).to(dev)


def check_labels(labels: torch.Tensor, num_classes: int | None, where: str = "update()") -> None:
    """(B,) class ids in [0, num_classes) (only >= 0 while the classes are unknown: losses= alone),
    refused before any loss is computed from them: on a GPU an id out of range stops the process
    with a device-side assert, and -100 (cross_entropy's ignore_index) gives a loss of 0, a silently
    lowest csl. One host read of the batch's extremes (a sync for device labels)."""
    if not len(labels):
        return
    low, high = torch.stack(torch.aminmax(labels)).tolist()  # one host read
    if low < 0:
        what = f"is outside [0, {num_classes})" if num_classes is not None else "is not a class id"
        raise HarnessError(f"{where}: label {low} {what}; labels must be class ids 0..C-1 (-100, cross_entropy's "
                           f"ignore_index, would give the sample a loss of 0: a silently lowest csl); leave "
                           f"unlabeled samples out of update(), e.g. keep = labels >= 0")
    if num_classes is not None and high >= num_classes:
        raise HarnessError(f"{where}: label {high} is outside [0, {num_classes}); labels must be class ids 0..C-1 "
                           f"of the logits' classes")


def _host_indices(indices: Any, where: str) -> np.ndarray:
    """Indices given as a list or array, as an array: None (a batch without its index: `batch.get`
    of a key the dataset does not give) or anything not numeric is named, not left to torch's
    TypeError about numpy object arrays."""
    array = np.asarray(indices)
    if array.dtype.kind in "OSUV":
        raise HarnessError(f"{where}: no sample indices (got {type(indices).__name__}); each batch must carry its "
                           f"samples' indices in the dataset: wrap the dataset so it returns its index "
                           f"(harness.integrations.WithIndex(dataset): (x, y) items become (x, y, index)) and pass "
                           f"the batch's index tensor")
    return array


def _looks_reordered(x: Any, y: Any) -> bool:
    """An eval batch whose x is integer and y floating point: its items came in another order."""
    return (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and y.dtype.is_floating_point
            and not (x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool))


def eval_labels(y: Any, length: int) -> torch.Tensor:
    """An eval pass's labels, checked as `update()` checks its own: (length,) integer class ids,
    as int64. Their range, and their agreement with the training labels, are counted on the
    device during the pass (`TrackedSignals.eval_batch`)."""
    if not isinstance(y, torch.Tensor):
        raise HarnessError(f"eval_epoch(): labels must be a torch tensor, got {type(y).__name__}")
    if y.dtype.is_floating_point or y.dtype.is_complex or y.dtype == torch.bool:
        raise HarnessError(f"eval_epoch(): labels must be integer class ids, got {y.dtype}; pass the labels the "
                           f"model is trained on, e.g. y.long() of integral values")
    if y.shape != (length,):
        raise HarnessError(f"eval_epoch(): labels have shape {tuple(y.shape)} but must be ({length},) for {length} "
                           f"indices")
    return y.long()
