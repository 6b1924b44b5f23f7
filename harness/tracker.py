"""Score every sample of *your own* training loop with memprox's proxies.

CSL's promise is that it is free: the loop already computes every sample's loss. `SampleTracker`
keeps those per-sample signals on the model's device while you train, then scores them with the
very proxy classes `python -m harness run` uses (`proxies.make_proxy`), reading the signals through
the same `ScoreContext` interface a stored run offers. The signals are recorded, and stored, by
the harness's own recorders in a `RecorderBank` (`harness/recorders/`): each batch goes to the
training-pass recorders' `on_batch`, each `eval_epoch` pass to the `eval_pass` recorder's
`on_eval_batch`, exactly as in `python -m harness run`. There is no second implementation of any
formula or of their storage.

Your loop needs each batch's sample indices. Wrap the dataset so it returns them::

    class WithIndex(torch.utils.data.Dataset):
        def __init__(self, ds): self.ds = ds
        def __len__(self): return len(self.ds)
        def __getitem__(self, i): return (*self.ds[i], i)        # (x, y, index)

and then, per batch ``for x, y, idx in loader``::

    logits = model(x); loss = F.cross_entropy(logits, y, reduction="none")
    loss.mean().backward(); opt.step(); opt.zero_grad()
    tracker.update(idx, losses=loss, logits=logits, labels=y)

with ``tracker.end_epoch()`` after each epoch and ``tracker.scores()`` (a DataFrame) at the end.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from harness.errors import HarnessError
from harness.recipe import Recipe
from harness.recorders import EVAL_LAST, RECORDERS, RecorderBank, RecorderRequest, Records, RunContext, build_recorder
from harness.recorders.eval_pass import eval_signals
from harness.recorders.train_pass import PerEpochRecorder, RunningLossSum
from harness.runspec import DataSpec, RunSpec
from proxies import Proxy, ScoreContext, available_proxies, resolve_proxies

__all__ = ["SampleTracker"]

#: The tracker's stand-in for "the base run": proxies ask for their recorders on it.
_BASE = RunSpec(data=DataSpec(dataset="user"), model="user", recipe=Recipe())
_TRAIN_KEYS = tuple(name for name, cls in RECORDERS.items() if issubclass(cls, PerEpochRecorder))
_EVAL_ALL = RecorderRequest.of("eval_pass", epochs="all").key
_EVAL_LAST = EVAL_LAST.key
_INDEX_DTYPES = frozenset({torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8})
#: Proxies that say nothing with fewer epochs: forgetting counts transitions between epochs,
#: variability is a standard deviation over epochs.
_MIN_EPOCHS = {"forgetting": 2, "variability": 2}


class SampleTracker:
    """Per-sample training signals of a user-written loop, scored by memprox's proxies.

    Args:
        n: number of samples in the training set; indices passed to `update` are in [0, n).
        proxies: proxies to compute (names, `"name(k=v)"` variants or Proxy objects). Default: every
            proxy the data you pass allows -- the training-pass proxies (csl, forgetting,
            threshold_lt, aum, el2n, variability) when `update` gets logits and labels, csl alone
            when it gets only losses, plus csl_eval / final_loss / in_confidence after `eval_epoch`.
            Naming them records only the signals they need (less memory, less work per batch).
        labels: the given label of every sample (optional; otherwise taken from `update`).
        running_sums: keep only a running per-sample loss sum: O(N) memory for N in the millions,
            but then csl is the only proxy available.

    Memory, on the device of the first batch's tensors: one float32 (N,) row per signal per
    epoch, i.e. O(N x epochs) -- loss (csl), correct (forgetting, threshold_lt), margin (aum),
    p_label and el2n (el2n, variability), so 5 x 4 bytes x N x epochs for the default set
    (N = 50,000 and 200 epochs: 200 MB) -- plus one (N,) row per signal for the epoch in progress,
    two int64 (N,) rows (given and predicted label), and for `eval_epoch` one float32 (N,) row per
    eval signal (loss, correct, p_label, p_max, phi) per call and the last pass's (N, C)
    probabilities (only the last call's rows when the selected proxies do not include csl_eval).
    `running_sums=True`: one float64 and one float32 (N,) row. Nothing is copied to the host before
    `scores()`; per batch there is no host sync (index checks of CUDA tensors are collected on the
    device and raised at `end_epoch`). Inputs in half precision (AMP) are cast to float32.

    Non-finite values: a sample whose loss or logits are NaN or inf in some batch (a diverged
    sample, an overflow that a GradScaler skipped) scores NaN in every proxy that reads that
    signal -- never the 0 or the partial sum that the proxies' "not presented" rule would give, which
    would rank a diverged sample least suspicious. The samples are counted on the device (one int32
    and one bool (N,) row, one int32 row per eval pass), read at `end_epoch` together with the index
    check, reported by a RuntimeWarning at the first such epoch and again by `scores()`. The loop is
    yours, so the tracker does not stop it; `warnings.simplefilter("error", RuntimeWarning)` does.
    """

    def __init__(
        self,
        n: int,
        *,
        proxies: Sequence[str | Proxy] | str | None = None,
        labels: Sequence[int] | np.ndarray | torch.Tensor | None = None,
        running_sums: bool = False,
    ) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise HarnessError(f"SampleTracker(n=...) must be the number of training samples (>= 1), got {n!r}")
        self.n = int(n)
        self.running_sums = running_sums
        self.epochs = 0
        self.num_classes: int | None = None
        self._selected = None if proxies is None else self._resolve(proxies)
        if self._selected is not None:
            keys = set().union(*(self._keys_of(p) for p in self._selected))
            self._train_keys = tuple(k for k in _TRAIN_KEYS if k in keys)
            self._keep_eval_history = _EVAL_ALL in keys
        else:
            self._train_keys = ("train_loss",) if running_sums else _TRAIN_KEYS
            self._keep_eval_history = True
        self._logit_keys = [k for k in self._train_keys if k != "train_loss"]
        self._fixed_labels = None if labels is None else self._label_array(labels)
        self._device: torch.device | None = None
        self._pending = False  # update() called since the last end_epoch()
        self._finished = False
        self._all_batches_had_logits = True
        self._eval_at: list[int] = []  # epochs completed when each eval pass ran
        self._eval_flags: list[torch.Tensor] = []  # per pass: int32 (N,) count of non-finite batches
        self._eval_key = _EVAL_ALL if self._keep_eval_history else _EVAL_LAST  # the eval recorder's storage
        self._bank: RecorderBank | None = None
        self._host: Records | None = None

    # -- recording ---------------------------------------------------------------------------
    def update(
        self,
        indices: torch.Tensor | np.ndarray | Sequence[int],
        *,
        losses: torch.Tensor | None = None,
        logits: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
    ) -> None:
        """Record one training batch: sample indices and per-sample losses (`reduction="none"`),
        and/or logits (B, C) with labels (B,); the loss is computed from logits when not given.
        Tensors may require grad (they are detached) and be half precision."""
        self._check_open("update")
        if losses is None and logits is None:
            raise HarnessError("update() needs losses= (per-sample, reduction='none') or logits= and labels=")
        ref = logits if logits is not None else losses
        if not isinstance(ref, torch.Tensor):
            raise HarnessError(f"update(): losses and logits must be torch tensors, got {type(ref).__name__}")
        self._ensure_device(ref.device, "update()")
        idx = self._indices(indices)
        b = idx.shape[0]
        if logits is not None:
            logits = self._tensor("logits", logits, ndim=2, length=b, floating=True)
            classes = logits.shape[1]
            if self.num_classes is None:
                self.num_classes = classes
            elif classes != self.num_classes:
                raise HarnessError(
                    f"update(): logits have {classes} classes but earlier batches had {self.num_classes}"
                )
        if labels is not None:
            labels = self._tensor("labels", labels, ndim=1, length=b, floating=False)
        elif logits is not None:
            if self._fixed_labels is None:
                raise HarnessError("update(): logits= needs labels= (or SampleTracker(labels=...) at construction)")
            labels = self._given[idx]
        if losses is not None:
            losses = self._tensor("losses", losses, ndim=1, length=b, floating=True)

        if logits is None:
            self._all_batches_had_logits = False
            if self._logit_keys and self._selected is not None:
                raise HarnessError(
                    f"update(): the selected proxies need {self._logit_keys}, computed from logits= and labels=; "
                    "pass them too, or select proxies=['csl'] for losses alone"
                )
            keys: Sequence[str] = ("train_loss",)
        else:
            keys = self._train_keys
        try:  # on the CPU, index_copy_ and gather check indices and labels for free: explain their errors
            if losses is not None:
                loss = losses.float()
            else:
                loss = nn.functional.cross_entropy(logits.float(), labels, reduction="none")
            if logits is not None:
                self._pred.index_copy_(0, idx, logits.argmax(1))
            self._bank.on_batch(self.epochs, idx, logits, loss, labels)  # without logits: train_loss only
            if labels is not None and self._fixed_labels is None:
                self._given.index_copy_(0, idx, labels)
            self._flag_non_finite(idx, loss, logits if keys != ("train_loss",) else None)
        except (IndexError, RuntimeError) as exc:
            raise self._explain(exc, idx, labels) from exc
        self._pending = True

    def end_epoch(self) -> None:
        """Close the epoch in progress (one device-to-host read of the deferred index check)."""
        self._check_open("end_epoch")
        if not self._pending:
            raise HarnessError("end_epoch() without update() since the previous epoch; "
                               "call update() for every batch and end_epoch() once per epoch")
        bad_index, non_finite = (bool(v) for v in torch.stack([self._bad, self._non_finite_now.any()]).tolist())
        if bad_index:  # only CUDA indices get here: on the CPU update() raised at once
            raise HarnessError(f"update() got sample indices outside [0, {self.n}) in epoch {self.epochs + 1}; "
                               f"pass the dataset's own indices and n = len(dataset)")
        if non_finite:
            self._close_non_finite_epoch()
        self._bank.on_epoch_end(self.epochs, 1, None)  # the running sum folds the epoch in
        self.epochs += 1
        self._pending = False

    @torch.no_grad()
    def eval_epoch(
        self,
        model: nn.Module,
        data: tuple[torch.Tensor, torch.Tensor] | Iterable[Sequence[torch.Tensor]],
        *,
        batch_size: int = 1024,
    ) -> None:
        """An eval-mode pass over the training set after an epoch, for csl_eval (call it after
        every epoch), final_loss and in_confidence (after the last one).

        `data` is either `(x, y)` tensors holding all n samples in index order, or an iterable of
        `(x, y, index)` batches (a DataLoader over the `WithIndex` wrapper, without augmentation).
        Wrap the call in `torch.autocast(...)` for a half-precision pass.
        """
        self._check_open("eval_epoch")
        if self.running_sums:
            raise HarnessError("eval_epoch(): running_sums=True keeps only the loss sum that csl needs; "
                               "use SampleTracker(running_sums=False) for csl_eval, final_loss, in_confidence")
        if self._pending:
            raise HarnessError("eval_epoch() runs between epochs: call end_epoch() first")
        param = next(iter(model.parameters()), None)
        self._ensure_device(param.device if param is not None else torch.device("cpu"), "eval_epoch()")
        flags: torch.Tensor | None = None  # this pass's non-finite count per sample
        epoch = self.epochs - 1  # the recorder's row: the epoch just closed (a pass before any is not stored)
        was_training = model.training
        model.eval()
        try:
            for idx, x, y in self._eval_batches(data, batch_size):
                logits = model(x)
                signals = eval_signals(logits, y)
                classes = signals["probs"].shape[-1]
                if self.num_classes is None:
                    self.num_classes = classes
                elif classes != self.num_classes:
                    raise HarnessError(f"eval_epoch(): the model gives {classes} classes, training batches had "
                                       f"{self.num_classes}")
                if flags is None:
                    flags = torch.zeros(self.n, dtype=torch.int32, device=self._device)
                    self._start_eval_pass(epoch, classes)
                try:
                    if epoch >= 0:
                        self._bank.on_eval_batch(epoch, idx, signals)
                    bad = ~torch.isfinite(signals["loss"]) | ~torch.isfinite(logits).all(-1)
                    flags.index_add_(0, idx, bad.to(torch.int32))
                except (IndexError, RuntimeError) as exc:
                    raise self._explain(exc, idx, None) from exc
        finally:
            model.train(was_training)
        if flags is None:
            raise HarnessError("eval_epoch(): data yielded no batches")
        if self._eval_at and self._eval_at[-1] == self.epochs:  # a repeated pass replaces this epoch's
            self._eval_at.pop()
            self._eval_flags.pop()
        if not self._keep_eval_history:
            self._eval_at.clear()
            self._eval_flags.clear()
        self._eval_at.append(self.epochs)
        self._eval_flags.append(flags)

    def _start_eval_pass(self, epoch: int, classes: int) -> None:
        """The eval recorder (made at the first pass, when C is known) clears the row it will write."""
        if self._eval_key not in self._bank:
            ctx = RunContext(None, None, None, 0, self._device, samples=self.n, classes=classes)
            self._bank.add(self._eval_key, build_recorder(RecorderRequest.of("eval_pass", epochs=(
                "all" if self._keep_eval_history else "last")), ctx))
        if epoch >= 0:
            self._bank.on_eval_start(epoch)

    # -- results -----------------------------------------------------------------------------
    def finish(self) -> SampleTracker:
        """Stop recording and copy the signals to the host (`scores()` and `suspects()` call it)."""
        if self._finished:
            return self
        if self._pending:
            raise HarnessError("the last epoch is still open: call end_epoch() after its last batch, then scores()")
        if self.epochs == 0:
            raise HarnessError("no epoch recorded: call update() for every batch and end_epoch() after each epoch")
        self._finished = True
        arrays = self._bank.arrays(rows=self.epochs)
        train_flags = self._non_finite_train.cpu().numpy()
        self._non_finite_host = {key: train_flags for key in _TRAIN_KEYS}
        passes = arrays.pop(self._eval_key, None)  # offered below under the keys the passes qualify for
        if self._eval_at:
            flags = [f.cpu().numpy() > 0 for f in self._eval_flags]
            last = self.epochs
            if self._eval_at[-1] == last:  # the pass after the last epoch: its row and probabilities
                arrays[_EVAL_LAST] = {k: v if k == "probs_last" else v[-1:].copy() for k, v in passes.items()}
                self._non_finite_host[_EVAL_LAST] = flags[-1]
            if self._eval_at == list(range(1, last + 1)):  # a pass after every epoch (history kept, or 1 epoch)
                arrays[_EVAL_ALL] = passes
                self._non_finite_host[_EVAL_ALL] = np.logical_or.reduce(flags)
        self._host = Records(arrays)
        self._labels_host = self._given.cpu().numpy()
        self._pred_host = self._pred.cpu().numpy()
        if _EVAL_LAST in arrays:  # the final model's eval-mode prediction beats the last batches'
            probs = arrays[_EVAL_LAST]["probs_last"]
            self._pred_host = np.where(np.isnan(probs).any(1), -1, np.nan_to_num(probs, nan=0.0).argmax(1))
        self._bank, self._eval_flags = None, []  # free the device buffers
        return self

    def scores(self, proxies: Sequence[str | Proxy] | str | None = None) -> pd.DataFrame:
        """One row per sample (index, given label, one column per proxy; higher = more memorized /
        more suspicious). Ends recording. `proxies` defaults to the constructor's selection, else
        every proxy the recorded signals allow. A sample never presented scores as the proxies
        score missing values (csl 0, means NaN); a sample with a non-finite loss or logits scores
        NaN in every proxy that reads them, with a RuntimeWarning naming the samples."""
        self.finish()
        chosen = self._resolve(proxies) if proxies is not None else self._default_proxies()
        ctx = ScoreContext(
            base=_BASE,
            labels=self._labels_host,
            num_classes=self.num_classes or 0,
            runs={_BASE: self._host},
        )
        columns: dict[str, Any] = {"index": np.arange(self.n), "label": _nullable(self._labels_host)}
        spoiled: dict[str, np.ndarray] = {}  # proxy label -> samples with a non-finite signal it reads
        for proxy in chosen:
            self._check_available(proxy)
            with warnings.catch_warnings():  # a sample never presented has no values: NaN, not a warning
                warnings.filterwarnings("ignore", "Mean of empty slice|Degrees of freedom", RuntimeWarning)
                column = np.array(proxy.score(ctx), dtype=np.float64)
            flags = [self._non_finite_host[k] for k in self._keys_of(proxy) if k in self._non_finite_host]
            bad = np.logical_or.reduce(flags) if flags else np.zeros(self.n, dtype=bool)
            if bad.any():
                column[bad] = np.nan  # the proxies read NaN as "not presented", which would score 0 or skip it
                spoiled[proxy.label] = np.flatnonzero(bad)
            columns[proxy.label] = column
        if spoiled:
            warnings.warn(_non_finite_report(spoiled), RuntimeWarning, stacklevel=2)
        return pd.DataFrame(columns)

    def suspects(self, k: int = 20, by: str | Proxy = "csl") -> pd.DataFrame:
        """The k samples ranked most likely mislabeled / memorized by proxy `by`: index, given
        label, predicted label (from the eval pass after the last epoch if there was one, else the
        last training-pass prediction) and score, highest score first (ties: lower index)."""
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise HarnessError(f"suspects(k=...) must be a positive integer, got {k!r}")
        table = self.scores([by])
        score = table.columns[-1]
        ranked = table.dropna(subset=[score]).sort_values(score, ascending=False, kind="stable").head(int(k))
        return pd.DataFrame(
            {
                "index": ranked["index"].to_numpy(),
                "label": ranked["label"].to_numpy(),
                "predicted": _nullable(self._pred_host[ranked["index"].to_numpy()]),
                "score": ranked[score].to_numpy(),
            }
        )

    def plot_suspects(
        self,
        images: np.ndarray | torch.Tensor,
        k: int = 16,
        *,
        by: str | Proxy = "csl",
        path: str | Path = "suspects.png",
        classes: Sequence[str] | None = None,
        columns: int = 8,
    ) -> Path:
        """PNG grid of the k suspects' images, captioned `#index given->predicted` and the score.

        `images`: all n training images in index order, (N, H, W), (N, C, H, W) or (N, H, W, C)
        with C in (1, 3); uint8, or real values scaled to 0..255 (min to max over all of them).
        """
        from harness.plots import new_figure, save_figure, show_image  # the extreme-image grid's drawing

        pictures = _as_uint8_nchw(images, self.n)
        table = self.suspects(k, by)
        rows = max(1, math.ceil(len(table) / columns))
        fig = new_figure((columns * 1.1, rows * 1.3 + 0.4))
        fig.suptitle(f"top {len(table)} by {by.label if isinstance(by, Proxy) else by}", fontsize=8)
        axes = fig.subplots(rows, columns, squeeze=False)

        def name(c: Any) -> str:
            return "?" if pd.isna(c) else (classes[int(c)] if classes is not None else str(int(c)))

        for cell, ax in enumerate(axes.flat):
            if cell < len(table):
                r = table.iloc[cell]
                caption = f"#{int(r['index'])} {name(r['label'])}->{name(r['predicted'])}\n{r['score']:.3g}"
                show_image(ax, pictures[int(r["index"])], caption)
            else:
                ax.set_axis_off()
        return save_figure(fig, path)

    # -- helpers -----------------------------------------------------------------------------
    def _check_open(self, what: str) -> None:
        if self._finished:
            raise HarnessError(f"{what}() after the tracker finished (scores()/suspects()/finish() was called); "
                               "create a new SampleTracker for another run")

    def _ensure_device(self, device: torch.device, where: str) -> None:
        if self._device is None:
            self._allocate(device)
        elif device != self._device:
            raise HarnessError(f"{where}: tensors are on {device} but earlier ones were on {self._device}; "
                               "keep the model and the tracked tensors on one device")

    def _allocate(self, device: torch.device) -> None:
        self._device = device
        ctx = RunContext(None, None, None, 0, device, samples=self.n)  # open-ended: rows grow per epoch
        self._bank = RecorderBank(ctx, timed=False)
        if self.running_sums:
            self._bank.add("train_loss", RunningLossSum(ctx))
        else:
            for key in self._train_keys:
                self._bank.add(key, build_recorder(RecorderRequest.of(key), ctx))
        given = self._fixed_labels if self._fixed_labels is not None else np.full(self.n, -1)
        self._given = torch.as_tensor(given, dtype=torch.int64).to(device)
        self._pred = torch.full((self.n,), -1, dtype=torch.int64, device=device)
        self._bad = torch.zeros((), dtype=torch.bool, device=device)
        self._non_finite_now = torch.zeros(self.n, dtype=torch.int32, device=device)  # this epoch's, per sample
        self._non_finite_train = torch.zeros(self.n, dtype=torch.bool, device=device)  # any epoch's

    def _flag_non_finite(self, idx: torch.Tensor, loss: torch.Tensor, logits: torch.Tensor | None) -> None:
        """Count the batch's samples whose loss (or logits, when logit signals are recorded) are not
        finite, on the device: no host sync per batch; `end_epoch` reads the count once."""
        bad = ~torch.isfinite(loss)
        if logits is not None:
            bad |= ~torch.isfinite(logits).all(1)
        self._non_finite_now.index_add_(0, idx, bad.to(torch.int32))

    def _close_non_finite_epoch(self) -> None:
        """Fold this epoch's non-finite samples into the record (their scores become NaN) and warn
        at the first epoch that has any, so a loop that keeps going is told at once."""
        now = self._non_finite_now > 0
        if not bool(self._non_finite_train.any()):
            samples = torch.nonzero(now).flatten().tolist()
            warnings.warn(
                f"SampleTracker: non-finite loss or logits (NaN or inf) for {len(samples)} sample(s) in epoch "
                f"{self.epochs + 1} (first: {samples[:10]}); they will score NaN in the proxies that read the "
                f"training pass. Lower the learning rate, or check these samples' inputs and labels",
                RuntimeWarning,
                stacklevel=3,
            )
        self._non_finite_train |= now
        self._non_finite_now.zero_()

    def _indices(self, indices: Any) -> torch.Tensor:
        idx = indices if isinstance(indices, torch.Tensor) else torch.as_tensor(np.asarray(indices))
        if idx.dim() != 1 or idx.dtype not in _INDEX_DTYPES:
            raise HarnessError(f"update(): indices must be a 1-D integer tensor of sample indices, got {idx.dtype} "
                               f"{tuple(idx.shape)}; let the dataset return its index (see the WithIndex wrapper)")
        if self._device.type == "cpu":  # index_copy_ itself rejects bad indices (see _explain)
            idx = idx if idx.device.type == "cpu" else idx.cpu()
            return idx if idx.dtype == torch.int64 else idx.long()
        if idx.device.type == "cpu":
            self._check_index_range(idx)  # a host tensor: checking costs no device sync
            return idx.to(self._device, torch.int64, non_blocking=True)
        idx = idx.to(self._device, torch.int64)
        self._bad |= ((idx < 0) | (idx >= self.n)).any()  # raised at end_epoch, without a sync here
        return idx.clamp(0, self.n - 1)

    def _check_index_range(self, idx: torch.Tensor) -> None:
        if len(idx):
            low, high = (int(v) for v in torch.aminmax(idx))
            if low < 0 or high >= self.n:
                raise HarnessError(f"sample index {low if low < 0 else high} is outside [0, {self.n}); "
                                   f"pass the dataset's own indices and n = len(dataset)")

    def _explain(self, exc: Exception, idx: torch.Tensor, labels: torch.Tensor | None) -> Exception:
        """A clear HarnessError for what torch rejected (bad index or label); anything else as is."""
        if idx.device.type == "cpu":
            try:
                self._check_index_range(idx)
            except HarnessError as clear:
                return clear
        if labels is not None and labels.device.type == "cpu" and len(labels):
            low, high = (int(v) for v in torch.aminmax(labels))
            top = self.num_classes
            if low < 0 or (top is not None and high >= top):
                return HarnessError(f"update(): label {low if low < 0 else high} is outside [0, {top}); "
                                    f"labels must be class ids 0..C-1")
        return exc

    def _tensor(self, what: str, value: Any, *, ndim: int, length: int, floating: bool) -> torch.Tensor:
        if not isinstance(value, torch.Tensor):
            raise HarnessError(f"update(): {what} must be a torch tensor, got {type(value).__name__}")
        if value.dim() != ndim or value.shape[0] != length:
            want = f"({length},)" if ndim == 1 else f"({length}, classes)"
            hint = "; compute the loss with reduction='none'" if what == "losses" else ""
            raise HarnessError(f"update(): {what} has shape {tuple(value.shape)} but must be {want} for "
                               f"{length} indices{hint}")
        if floating != value.dtype.is_floating_point or value.dtype == torch.bool:
            kind = "floating point" if floating else "integer class ids"
            raise HarnessError(f"update(): {what} must be {kind}, got {value.dtype}")
        if value.device != self._device:
            raise HarnessError(f"update(): {what} is on {value.device} but the tracker's buffers are on "
                               f"{self._device}; keep the batch's tensors on one device")
        return value.detach()

    def _label_array(self, labels: Any) -> np.ndarray:
        y = labels.cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
        if y.shape != (self.n,) or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
            raise HarnessError(f"SampleTracker(labels=...) must be {self.n} integer class ids >= 0, got "
                               f"{y.dtype} {y.shape}")
        return y.astype(np.int64)

    def _eval_batches(self, data: Any, batch_size: int):
        """(index, x, y) batches on the tracker's device."""
        dev = self._device
        if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data):
            x, y = data
            if len(x) != self.n or y.shape != (self.n,):
                raise HarnessError(f"eval_epoch(): (x, y) must hold all {self.n} samples in index order, got "
                                   f"{tuple(x.shape)} and {tuple(y.shape)}; or pass batches (x, y, index)")
            for start in range(0, self.n, batch_size):
                stop = min(self.n, start + batch_size)
                yield (torch.arange(start, stop, device=dev), x[start:stop].to(dev), y[start:stop].to(dev))
            return
        for batch in data:
            if not (isinstance(batch, (tuple, list)) and len(batch) == 3):
                raise HarnessError("eval_epoch(): batches must be (x, y, index) -- wrap the dataset so it returns "
                                   "its index (WithIndex in harness.tracker's docstring) -- or pass (x, y) tensors")
            x, y, idx = batch
            yield self._indices(idx), x.to(dev), y.to(dev)

    # -- proxies -----------------------------------------------------------------------------
    def _resolve(self, proxies: Sequence[str | Proxy] | str | Proxy) -> list[Proxy]:
        if isinstance(proxies, (str, Proxy)):
            proxies = [proxies]
        named = [p for p in proxies if isinstance(p, str)]
        chosen = resolve_proxies(",".join(named)) if named else []
        chosen += [p for p in proxies if isinstance(p, Proxy)]
        if len(chosen) != len(proxies):
            raise HarnessError("proxies must be proxy names ('csl', 'in_confidence(variant=max)') or Proxy objects")
        for proxy in chosen:
            self._keys_of(proxy)
        return chosen

    def _keys_of(self, proxy: Proxy) -> set[str]:
        """The recorder keys a proxy reads, or a HarnessError if the tracker cannot supply them."""
        supported = [p.label for p in _trackable()]
        needs = proxy.needs(_BASE)
        if len(needs) != 1 or needs[0].spec != _BASE:
            raise HarnessError(f"{proxy.label} trains runs of its own, which only `python -m harness run` does; "
                               f"the tracker computes {', '.join(supported)}")
        keys = {r.key for r in needs[0].recorders}
        unknown = keys - set(_TRAIN_KEYS) - {_EVAL_ALL, _EVAL_LAST}
        if unknown:
            raise HarnessError(f"{proxy.label} needs {', '.join(sorted(unknown))}, which only memprox's own training "
                               f"loop records; the tracker computes {', '.join(supported)}")
        if self.running_sums and proxy.name != "csl":
            raise HarnessError(f"running_sums=True keeps only the running loss sum that csl needs, not what "
                               f"{proxy.label} reads; use SampleTracker(running_sums=False) (O(N x epochs) memory)")
        return keys

    def _default_proxies(self) -> list[Proxy]:
        if self._selected is not None:
            return self._selected
        available = self._host.recorders
        out = []
        for proxy in _trackable():
            keys = self._keys_of_quiet(proxy)
            if keys is not None and keys <= available and self.epochs >= _MIN_EPOCHS.get(proxy.name, 1):
                if any(k != "train_loss" and k in _TRAIN_KEYS for k in keys) and not self._all_batches_had_logits:
                    continue
                out.append(proxy)
        return out

    def _keys_of_quiet(self, proxy: Proxy) -> set[str] | None:
        try:
            return self._keys_of(proxy)
        except HarnessError:
            return None

    def _check_available(self, proxy: Proxy) -> None:
        keys = self._keys_of(proxy)
        need = _MIN_EPOCHS.get(proxy.name, 1)
        if self.epochs < need:
            raise HarnessError(f"{proxy.label} needs at least {need} epochs, the tracker recorded {self.epochs}")
        for key in sorted(keys):
            recorded = key in self._host.recorders
            if key in _TRAIN_KEYS and key != "train_loss" and not self._all_batches_had_logits:
                recorded = False  # some batches came without logits: these rows have holes
            if recorded:
                continue
            if key == _EVAL_ALL:
                fix = (f"call eval_epoch(model, data) after every epoch (passes ran after epochs "
                       f"{self._eval_at or 'none'} of {self.epochs})")
            elif key == _EVAL_LAST:
                fix = f"call eval_epoch(model, data) after the last end_epoch() (epoch {self.epochs})"
            elif key not in self._train_keys:
                fix = f"select it when creating the tracker: SampleTracker(n, proxies=[..., {proxy.label!r}])"
            else:
                fix = "pass logits= and labels= to every update()"
            raise HarnessError(f"{proxy.label} reads {key}, which this tracker did not record; {fix}")


def _trackable() -> list[Proxy]:
    """Every registered proxy (plugins included) that reads only signals the tracker records."""
    out = []
    for cls in available_proxies().values():
        try:
            proxy = cls()
        except Exception:  # a proxy whose defaults cannot be built is not ours to report here
            continue
        needs = proxy.needs(_BASE)
        if len(needs) == 1 and needs[0].spec == _BASE and {r.key for r in needs[0].recorders} <= {
            *_TRAIN_KEYS, _EVAL_ALL, _EVAL_LAST
        }:
            out.append(proxy)
    return out


def _non_finite_report(spoiled: dict[str, np.ndarray]) -> str:
    """One warning for `scores()`: which samples got NaN because a signal was not finite, and why."""
    samples = np.unique(np.concatenate(list(spoiled.values())))
    per_proxy = ", ".join(f"{label} ({len(idx)})" for label, idx in spoiled.items())
    return (f"SampleTracker: {len(samples)} sample(s) had a non-finite loss or logits (NaN or inf), first: "
            f"{samples[:10].tolist()}; they score NaN in {per_proxy} rather than a number that would rank them. "
            f"Lower the learning rate, or check these samples' inputs and labels")


def _nullable(labels: np.ndarray) -> pd.arrays.IntegerArray:
    """Class ids with -1 (never seen) as <NA>."""
    labels = np.asarray(labels, dtype=np.int64)
    return pd.arrays.IntegerArray(np.where(labels < 0, 0, labels), labels < 0)


def _as_uint8_nchw(images: Any, n: int) -> np.ndarray:
    x = images.detach().cpu().numpy() if isinstance(images, torch.Tensor) else np.asarray(images)
    if len(x) != n:
        raise HarnessError(f"plot_suspects(): images must hold all {n} samples in index order, got {len(x)}")
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[1] not in (1, 3) and x.shape[3] in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise HarnessError(f"plot_suspects(): images must be (N, H, W), (N, C, H, W) or (N, H, W, C) with C in "
                           f"(1, 3), got {x.shape}")
    if x.dtype != np.uint8:
        x = x.astype(np.float64)
        low, high = np.nanmin(x), np.nanmax(x)
        x = np.rint((x - low) / (high - low if high > low else 1.0) * 255).astype(np.uint8)
    return x
