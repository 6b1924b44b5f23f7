"""Session 30's leftovers in the own-loop tracker: a refused call changes nothing. A refused first
`eval_epoch` made the tracker's buffers (a later `load_state_dict` was refused: "resumes a new tracker"),
a refused pass dropped the earlier pass of its row (final_loss refused after a good pass, then one with the
wrong labels), and `suspects(classes=...)` / `plot_suspects(columns=...)` refused after ending the record.
Each public method is called with bad arguments at four stages of a run; its state_dict() must be unchanged."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch import nn

from harness import SampleTracker
from harness.errors import HarnessError

N, C = 12, 3


def _data() -> tuple[torch.Tensor, torch.Tensor, nn.Module]:
    g = torch.Generator().manual_seed(30)
    x, y = torch.randn(N, 4, generator=g), torch.arange(N) % C
    torch.manual_seed(30)
    return x, y, nn.Linear(4, C)


X, Y, MODEL = _data()


def _same(a: Any, b: Any, path: str = "state") -> list[str]:
    """Where two state_dict() values differ (tensors compared bitwise, NaN equal to NaN)."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        ok = (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
              and a.dtype == b.dtype and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0)))
        return [] if ok else [path]
    if isinstance(a, dict) and isinstance(b, dict):
        if set(a) != set(b):
            return [f"{path} keys {sorted(set(a) ^ set(b))}"]
        return [d for k in a for d in _same(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        if len(a) != len(b):
            return [f"{path} has {len(b)} items, had {len(a)}"]
        return [d for i, (u, v) in enumerate(zip(a, b)) for d in _same(u, v, f"{path}[{i}]")]
    return [] if a == b else [f"{path}: {b!r} was {a!r}"]


def _tracker(stage: str, **kwargs: Any) -> SampleTracker:
    """fresh; mid (epoch 2 open); closed (2 epochs, no eval pass); evalled (a pass after each epoch)."""
    tracker = SampleTracker(N, **kwargs)
    if stage == "fresh":
        return tracker
    for epoch in range(2):
        with torch.no_grad():
            tracker.update(torch.arange(N), logits=MODEL(X) * (epoch + 1), labels=Y)
        if stage == "mid" and epoch == 1:
            return tracker
        tracker.end_epoch()
        if stage == "evalled":
            tracker.eval_epoch(MODEL, (X, Y))
    return tracker


class Raises(nn.Module):
    """A model whose second batch raises (a user's model failing mid-pass)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner, self.calls = MODEL, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("the model failed")
        return self.inner(x)


class Wide(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = nn.Linear(4, C + 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)


IDX = torch.arange(4)
with torch.no_grad():
    LOGITS4 = MODEL(X[:4])
IMAGES = np.zeros((N, 2, 2), np.uint8)
REFUSED: dict[str, Callable[[SampleTracker, Path], object]] = {
    "update without losses or logits": lambda t, _: t.update(IDX),
    "update with an index outside n": lambda t, _: t.update(torch.tensor([0, 1, 2, 99]), logits=LOGITS4, labels=Y[:4]),
    "update with float indices": lambda t, _: t.update(IDX.float(), logits=LOGITS4, labels=Y[:4]),
    "update with 1-D logits": lambda t, _: t.update(IDX, logits=LOGITS4[:, 0], labels=Y[:4]),
    "update with more classes": lambda t, _: t.update(IDX, logits=torch.randn(4, C + 1), labels=Y[:4]),
    "update with label -100": lambda t, _: t.update(IDX, logits=LOGITS4, labels=torch.tensor([0, -100, 1, 2])),
    "update with logits but no labels": lambda t, _: t.update(IDX, logits=LOGITS4),
    "update with losses of shape (4, 1)": lambda t, _: t.update(IDX, losses=torch.ones(4, 1)),
    "update with a dict for logits": lambda t, _: t.update(IDX, logits={"logits": LOGITS4}, labels=Y[:4]),
    "end_epoch": lambda t, _: t.end_epoch(),
    "eval_epoch of a model with more classes": lambda t, _: t.eval_epoch(Wide(), (X, Y)),
    "eval_epoch of a string": lambda t, _: t.eval_epoch(MODEL, "x"),
    "eval_epoch of 5 samples": lambda t, _: t.eval_epoch(MODEL, (X[:5], Y[:5])),
    "eval_epoch with batch_size 0": lambda t, _: t.eval_epoch(MODEL, (X, Y), batch_size=0),
    "eval_epoch with float labels": lambda t, _: t.eval_epoch(MODEL, (X, Y.float())),
    "eval_epoch with other labels": lambda t, _: t.eval_epoch(MODEL, (X, (Y + 1) % C)),
    "eval_epoch with labels outside the classes": lambda t, _: t.eval_epoch(MODEL, (X, Y + C)),
    "eval_epoch of no batches": lambda t, _: t.eval_epoch(MODEL, []),
    "eval_epoch whose model raises": lambda t, _: t.eval_epoch(Raises(), (X, Y), batch_size=4),
    "eval_epoch of a dict batch": lambda t, _: t.eval_epoch(MODEL, [{"x": X}]),
    "scores of an unknown proxy": lambda t, _: t.scores("nope"),
    "scores of 5": lambda t, _: t.scores(5),  # type: ignore[arg-type]
    "scores of csl_eval without its passes": lambda t, _: t.scores(["csl_eval"]),
    "suspects with k=0": lambda t, _: t.suspects(k=0),
    "suspects by an unknown proxy": lambda t, _: t.suspects(by="nope"),
    "suspects naming one class": lambda t, _: t.suspects(classes=["a"]),
    "suspects naming five classes": lambda t, _: t.suspects(classes=list("abcde")),
    "plot_suspects of 3 images": lambda t, tmp: t.plot_suspects(np.zeros((3, 2, 2)), path=tmp / "a.png"),
    "plot_suspects to a .txt": lambda t, tmp: t.plot_suspects(IMAGES, path=tmp / "a.txt"),
    "plot_suspects naming one class": lambda t, tmp: t.plot_suspects(IMAGES, path=tmp / "b.png", classes=["a"]),
    "plot_suspects in 0 columns": lambda t, tmp: t.plot_suspects(IMAGES, path=tmp / "c.png", columns=0),
    "load_state_dict of another n": lambda t, _: t.load_state_dict(SampleTracker(N + 1).state_dict()),
    "finish": lambda t, _: t.finish(),
}
#: refusals not by a HarnessError: the user's own model raised
NOT_OURS = {"eval_epoch whose model raises": (HarnessError, RuntimeError)}


@pytest.mark.parametrize("stage", ["fresh", "mid", "closed", "evalled"])
@pytest.mark.parametrize("kwargs", [{}, {"labels": Y.numpy()}, {"proxies": ["csl", "final_loss"]}],
                         ids=["default", "labels", "csl+final_loss"])
def test_every_refused_call_leaves_the_state_unchanged(stage: str, kwargs: dict, tmp_path: Path) -> None:
    changed: dict[str, list[str]] = {}
    for name, call in REFUSED.items():
        tracker = _tracker(stage, **kwargs)
        before = copy.deepcopy(tracker.state_dict())
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                call(tracker, tmp_path)
            except NOT_OURS.get(name, HarnessError):
                pass
            else:
                continue  # accepted at this stage (an eval pass of a closed epoch, scores() of a closed run)
        if tracker.finished:
            changed[name] = ["the refused call ended the record"]
            continue
        if diff := _same(before, tracker.state_dict()):
            changed[name] = diff[:2]
    assert changed == {}
    assert not list(tmp_path.iterdir())  # no picture was drawn by a refused call


def test_a_refused_first_eval_pass_leaves_a_new_tracker_that_loads_a_state() -> None:
    """The symptom of the leftover: a first eval_epoch with the wrong labels made the buffers, so the
    load_state_dict() the loop then ran was refused ("resumes a new tracker")."""
    saved = _tracker("closed").state_dict()
    tracker = SampleTracker(N)
    with pytest.raises(HarnessError, match="labels must be integer class ids"):
        tracker.eval_epoch(MODEL, (X, Y.float()))
    with pytest.raises(HarnessError, match=r"label\(s\) outside \[0, 3\)"):
        tracker.eval_epoch(MODEL, (X, Y + C))
    assert tracker.num_classes is None
    tracker.load_state_dict(saved)
    tracker.eval_epoch(MODEL, (X, Y))
    with torch.no_grad():
        want = nn.functional.cross_entropy(MODEL(X), Y, reduction="none").numpy().astype(np.float64)
    np.testing.assert_array_equal(tracker.scores(["final_loss"])["final_loss"].to_numpy(), want)


@pytest.mark.parametrize("proxies", [None, ["final_loss"]], ids=["history", "last-only"])
def test_a_refused_repeat_of_a_pass_keeps_the_pass_it_would_replace(proxies) -> None:
    """A good pass after the last epoch, then one with the wrong labels (refused): final_loss is the good
    pass's cross-entropy. It was refused ("final_loss reads eval_pass[epochs=last]"): the row was cleared."""
    tracker = _tracker("closed", proxies=proxies)
    tracker.eval_epoch(MODEL, (X, Y))
    with pytest.raises(HarnessError, match="other than the one they were trained on"):
        tracker.eval_epoch(MODEL, (X, (Y + 1) % C))
    with pytest.raises(RuntimeError, match="the model failed"):
        tracker.eval_epoch(Raises(), (X, Y), batch_size=4)
    with torch.no_grad():
        want = nn.functional.cross_entropy(MODEL(X), Y, reduction="none").numpy().astype(np.float64)
    again = SampleTracker(N, proxies=proxies)
    again.load_state_dict(tracker.state_dict())
    assert again.state_dict()["eval_at"] == [2]
    for scored in (tracker, again):
        np.testing.assert_array_equal(scored.scores(["final_loss"])["final_loss"].to_numpy(), want)


def test_a_refused_pass_after_a_new_epoch_adds_no_row() -> None:
    """With a pass after every epoch, a refused pass after epoch 3 leaves 2 rows (it made a third), and the
    pass after epoch 3 then given scores csl_eval as the sum of the three passes' losses."""
    tracker = _tracker("evalled")
    with torch.no_grad():
        tracker.update(torch.arange(N), logits=MODEL(X), labels=Y)
    tracker.end_epoch()
    with pytest.raises(HarnessError, match="other than the one they were trained on"):
        tracker.eval_epoch(MODEL, (X, (Y + 1) % C))
    assert len(tracker.state_dict()["signals"]["bank"]["eval_pass[epochs=all]"]["loss"]) == 2
    tracker.eval_epoch(MODEL, (X, Y))
    with torch.no_grad():
        ce = nn.functional.cross_entropy(MODEL(X), Y, reduction="none").numpy().astype(np.float64)
    np.testing.assert_allclose(tracker.scores(["csl_eval"])["csl_eval"].to_numpy(), 3 * ce, rtol=1e-6)


def test_suspects_with_too_few_names_leaves_the_record_open() -> None:
    tracker = _tracker("closed")
    with pytest.raises(HarnessError, match=r"names 1 class\(es\) but the table needs class ids 0..2"):
        tracker.suspects(classes=["a"])
    with pytest.raises(HarnessError, match=r"plot_suspects\(columns=...\) must be a positive integer, got 0"):
        tracker.plot_suspects(IMAGES, columns=0)
    assert not tracker.finished
    tracker.eval_epoch(MODEL, (X, Y))  # the pass a user adds after seeing the error: still possible
    table = tracker.suspects(k=2, classes=["a", "b", "c"])
    assert table["label_name"].tolist() == ["abc"[int(Y[i])] for i in table["index"]]


def test_losses_only_suspects_with_too_few_names_leaves_the_record_open() -> None:
    tracker = SampleTracker(N)
    tracker.update(torch.arange(N), losses=torch.linspace(0, 1, N), labels=Y)
    tracker.end_epoch()
    with pytest.raises(HarnessError, match=r"names 2 class\(es\) but the table needs class ids 0..2"):
        tracker.suspects(classes=["a", "b"])
    assert not tracker.finished
    with pytest.warns(UserWarning, match="no suggested label"):
        assert tracker.suspects(k=1, classes=["a", "b", "c"])["index"].tolist() == [N - 1]


def test_scores_of_a_number_names_what_to_pass() -> None:
    with pytest.raises(HarnessError, match="proxies must be proxy names .* or Proxy objects, got int"):
        _tracker("closed").scores(5)  # type: ignore[arg-type]
