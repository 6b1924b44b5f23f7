"""`SampleTracker`'s results: the recorded signals copied to the host once (`finish`), scored by
the proxies (`scores`), ranked (`suspects`) and drawn (`plot_suspects`)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from harness.errors import HarnessError
from harness.recorders.class_prob import insert_suggested, mean_probs
from harness.tracker.class_names import check_class_count, checked_classes, insert_name_columns
from harness.tracker.class_probs import class_names
from harness.tracker.fields import TrackerFields
from harness.tracker.report import (
    absent_report,
    as_uint8_nchw,
    check_png_path,
    draw_suspects,
    left_out_report,
    non_finite_report,
    nullable,
    unread_report,
)
from harness.tracker.selection import BASE, LOSS_KEY
from harness.values import expand_home
from proxies import Proxy, ScoreContext
from proxies.base import checked_scores, read_only_hint

if TYPE_CHECKING:
    from typing_extensions import Self


class TrackerResults(TrackerFields):
    """`SampleTracker`'s results API (its state lives in the tracker, see `SampleTracker`)."""

    # the host copies `finish` makes: read only after it
    _non_finite_host: dict[str, np.ndarray]
    _missing_host: dict[str, np.ndarray]
    _labels_host: np.ndarray
    _pred_host: np.ndarray
    _presented_host: np.ndarray
    _class_probs_host: dict[str, np.ndarray] | None  # the suggested label's sums (`ClassProbSums.host`)

    def finish(self) -> Self:
        """Stop recording and copy the signals to the host (`scores()` and `suspects()` call it)."""
        if self._finished:
            return self
        if self._pending:
            raise HarnessError("the last epoch is still open: call end_epoch() after its last batch, then scores(); "
                               "after a loop that raised mid-epoch, discard_epoch() drops the partial epoch instead")
        if self.epochs == 0:
            raise HarnessError("no epoch recorded: call update() for every batch and end_epoch() after each epoch")
        self._restore_now("scores()")
        self._finished = True
        signals = self._signals
        assert signals is not None  # epochs were recorded, and a loaded state was restored just above
        (self._host, self._non_finite_host, self._missing_host, self._labels_host,
         self._pred_host) = signals.to_host(self.epochs)
        self._presented_host = signals.presentations.epochs.cpu().numpy().astype(np.int64)
        self._class_probs_host = None if self._class_probs is None else self._class_probs.host()
        self._signals = self._class_probs = None  # free the device buffers
        return self

    def scores(self, proxies: Sequence[str | Proxy] | str | None = None) -> pd.DataFrame:
        """One row per sample (index, given label, one column per proxy; higher = more memorized /
        more suspicious). Ends recording. `proxies` defaults to the constructor's selection, else
        every proxy the recorded signals allow. A sample never presented scores as the proxies
        score missing values (csl 0, means NaN); a sample with a non-finite loss or logits scores
        NaN in every proxy of that pass, with a RuntimeWarning naming the samples; so does a
        sample an `eval_epoch` pass left out, in the proxies that read that pass."""
        _finish_for(self, proxies)
        records = self._host
        assert records is not None  # copied by finish()
        selection, recorded = self._selection, records.recorders
        chosen = (selection.resolve(proxies) if proxies is not None
                  else selection.default(recorded, self.epochs, self._all_batches_had_logits))
        ctx = ScoreContext(base=BASE, labels=self._labels_host, num_classes=self.num_classes or 0,
                           runs={BASE: records})
        columns: dict[str, Any] = {"index": np.arange(self.n), "label": nullable(self._labels_host)}
        spoiled: dict[str, np.ndarray] = {}  # proxy label -> samples with a non-finite signal it reads
        left_out: dict[str, np.ndarray] = {}  # proxy label -> samples an eval pass it reads did not cover
        unread: dict[str, np.ndarray] = {}  # proxy label -> samples presented, but not in the epochs it reads
        for proxy in chosen:
            selection.check_available(proxy, recorded, self.epochs, self._all_batches_had_logits, self._eval_at)
            with warnings.catch_warnings():  # a sample never presented has no values: NaN, not a warning
                warnings.filterwarnings("ignore", "Mean of empty slice|Degrees of freedom|invalid value encountered",
                                        RuntimeWarning)
                column = _checked(proxy, _score(proxy, ctx), self.n)
            keys = selection.keys_of(proxy)
            # the proxies read NaN as "not presented", which would score 0 (a sum) or skip it (a mean)
            explained = np.zeros(self.n, dtype=bool)
            for found, host in ((spoiled, self._non_finite_host), (left_out, self._missing_host)):
                bad = _any_of(host, keys, self.n)
                explained |= bad
                if bad.any():
                    column[bad] = np.nan
                    found[proxy.label] = np.flatnonzero(bad)
            if (nan := np.isnan(column) & (self._presented_host > 0) & ~explained).any():
                unread[proxy.label] = np.flatnonzero(nan)  # el2n's early window, a sampler's absences
            columns[proxy.label] = column
        if spoiled:
            warnings.warn(non_finite_report(spoiled), RuntimeWarning, stacklevel=2)
        if left_out:
            warnings.warn(left_out_report(left_out, self._eval_at), RuntimeWarning, stacklevel=2)
        if unread:
            warnings.warn(unread_report(unread), RuntimeWarning, stacklevel=2)
        absent = absent_report(self._presented_host, self.epochs)
        if absent and any(LOSS_KEY in selection.keys_of(proxy) for proxy in chosen):  # a sum over epochs
            warnings.warn(absent, RuntimeWarning, stacklevel=2)
        return pd.DataFrame(columns)

    def epochs_presented(self) -> np.ndarray:
        """How many of the recorded epochs presented each sample (int64 (N,); ends recording): csl
        sums over those, so `csl / epochs_presented()` is its per-epoch mean where epochs were missed."""
        return self.finish()._presented_host.copy()

    def suspects(self, k: int = 20, by: str | Proxy = "csl", classes: Sequence[str] | None = None) -> pd.DataFrame:
        """The k samples ranked most likely mislabeled / memorized by proxy `by`: index, given
        label, predicted label (from the eval pass after the last epoch if there was one, else the
        last training-pass prediction), the suggested label (`suggested`, `suggested_name` and
        `p_suggested`: the suspects task's rule, of the classes other than the given one the highest
        mean training-pass softmax; left out, said once, when the sums were not recorded) and
        score, highest score first (ties: lower index). `classes` (a name per class, in id order) puts
        each id's name beside it as the suspects CSV does: `label_name`, `predicted_name`,
        `suggested_name` (without it, `suggested_name` is the id as text)."""
        return self._suspects(k, by, classes, "suspects")

    def _suspects(self, k: int, by: str | Proxy, classes: Sequence[str] | None, call: str) -> pd.DataFrame:
        """`suspects()`, its errors naming `call` (`plot_suspects` draws this table)."""
        names = _names_open(self, k, classes, call)  # before scores(), which ends recording
        table = self.scores([by])
        if names is not None:
            check_class_count(names, (self._labels_host, self._pred_host), self.num_classes, call)
        score = table.columns[-1]
        ranked = table.dropna(subset=[score]).sort_values(score, ascending=False, kind="stable").head(int(k))
        rows = ranked["index"].to_numpy()
        out = pd.DataFrame({"index": rows, "label": ranked["label"].array,  # Int64: <NA> if never seen, not 2.0
                            "predicted": nullable(self._pred_host[rows]), "score": ranked[score].to_numpy()})
        if names is not None:
            insert_name_columns(out, names)
        self._insert_suggested(out, names)
        return out

    def _insert_suggested(self, table: pd.DataFrame, names: list[str] | None) -> None:
        """The suggested label's three columns after `predicted` (`predicted_name` when named), or,
        without the sums, why not (once per tracker: a `suspects()` and its `plot_suspects()`)."""
        if self._class_probs_host is not None and not self._all_batches_had_logits:
            self._class_probs_host = None  # the sums miss the presentations that came without logits
            self._no_suggestion = ("some update() calls came without logits=, so the class probabilities miss "
                                   "those presentations; pass logits= and labels= to every update()")
        arrays = self._class_probs_host
        if arrays is None:
            if self._no_suggestion:
                warnings.warn(f"SampleTracker: no suggested label: {self._no_suggestion}", UserWarning, stacklevel=4)
                self._no_suggestion = ""
            return
        rows = table["index"].to_numpy(dtype=np.int64)
        probs = mean_probs({name: values[rows] for name, values in arrays.items()})
        after = "predicted_name" if "predicted_name" in table else "predicted"
        insert_suggested(table, probs, self._labels_host[rows], class_names(names, arrays["prob_sum"].shape[1]), after)

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
        """PNG grid of the k suspects' images, captioned `#index given->predicted (suggested?)` and
        the score (the suggested label when `suspects()` has one).

        `images`: all n training images in index order, (N, H, W), (N, C, H, W) or (N, H, W, C)
        with C in (1, 3); uint8, or real values scaled to 0..255 (min to max over all of them).
        """
        path = expand_home(check_png_path(path), "plot_suspects(path=...)")  # not a folder named ~ in the working one
        pictures, columns = as_uint8_nchw(images, self.n), _checked_columns(columns)
        names = checked_classes(classes, "plot_suspects")  # a list: a generator of names is read once
        table = self._suspects(k, by, names, "plot_suspects")
        return draw_suspects(table, pictures, by.label if isinstance(by, Proxy) else by, path, names, columns)


def _finish_for(tracker: TrackerResults, proxies: Sequence[str | Proxy] | str | None) -> None:
    """`finish()` for `scores(proxies)`: proxies that the names do not resolve to, or that the record cannot
    give (an eval pass not run, logits not passed), are refused before it, with the tracker still open, so
    the fix the error names (`eval_epoch` after the last epoch, say) can still be made."""
    selection = tracker._selection
    chosen = selection.resolve(proxies) if proxies is not None else selection.selected
    if chosen and not (tracker._finished or tracker._pending) and tracker.epochs:
        recorded = selection.recorded_before_finish(tracker._eval_at, tracker.epochs)
        for proxy in chosen:
            selection.check_available(proxy, recorded, tracker.epochs, tracker._all_batches_had_logits,
                                      tracker._eval_at)
    tracker.finish()


def _checked_args(k: object, classes: Sequence[str] | None, call: str) -> list[str] | None:
    """`suspects()`'s k and its `classes` as a list of distinct names (`checked_classes`)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise HarnessError(f"{call}(k=...) must be a positive integer, got {k!r}")
    return checked_classes(classes, call)


def _names_open(tracker: TrackerResults, k: object, classes: Sequence[str] | None, call: str) -> list[str] | None:
    """`_checked_args`, and the names' count checked while the tracker is open: refused after `scores()`, the
    error ended the record (no eval pass could be added, no state saved) for a typo in a list of names."""
    names = _checked_args(k, classes, call)
    if names is not None and not tracker._finished:
        given = () if tracker.num_classes is not None else (_given(tracker),)  # losses= alone: the labels' classes
        check_class_count(names, given, tracker.num_classes, call)
    return names


def _given(tracker: TrackerResults) -> np.ndarray:
    """The given labels so far, without ending the record."""
    if tracker._signals is not None:
        return tracker._signals.given[: tracker.n].cpu().numpy()
    saved = tracker._saved["signals"]["given"] if tracker._saved is not None else None
    return saved[: tracker.n].numpy() if saved is not None else np.zeros(0, dtype=np.int64)


def _checked_columns(columns: object) -> int:
    """`plot_suspects(columns=...)`, checked before the table (0 failed in the drawing, after the record ended)."""
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise HarnessError(f"plot_suspects(columns=...) must be a positive integer, got {columns!r}")
    return int(columns)


def _any_of(flags: dict[str, np.ndarray], keys: set[str], n: int) -> np.ndarray:
    """The samples flagged under any of `keys` (bool (n,))."""
    found = [flags[k] for k in keys if k in flags]
    return np.logical_or.reduce(found) if found else np.zeros(n, dtype=bool)


def _score(proxy: Proxy, ctx: ScoreContext) -> object:
    """The proxy's scores; an error inside it names the proxy (under `scores()` of several proxies a bare
    traceback from a third-party proxy's code left the user to find which one), as the experiment does."""
    try:
        return proxy.score(ctx)
    except HarnessError:
        raise
    except Exception as e:
        raise HarnessError(f"proxy {proxy.label} failed: {type(e).__name__}: {e}{read_only_hint(e)}") from e


def _checked(proxy: Proxy, raw: object, n: int) -> np.ndarray:
    """`raw` through the experiment's own check (`checked_scores`), its error naming the proxy as
    the experiment's failure line does: a (n, 1) array failed inside pandas without a name, a
    complex one lost its imaginary part with a mere ComplexWarning, a bf16 tensor failed in numpy."""
    try:
        return checked_scores(raw, n)
    except (ValueError, TypeError) as e:
        raise type(e)(f"proxy {proxy.label} failed: {e}") from None
