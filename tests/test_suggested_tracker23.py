"""The tracker's suggested label (SampleTracker.suspects / plot_suspects): the suspects task's rule
from the suspects task's recorder, fed the logits of a user's loop. Checked against a recomputation
by hand in a plain loop, across a checkpoint resume and a discarded epoch, for a loop that passes
losses only, for the size bound, for a state saved before it existed, and through Lightning."""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from harness.errors import HarnessError
from harness.recorders import RunContext, build_recorder
from harness.recorders.class_prob import SUGGEST
from harness.tracker import SampleTracker
from harness.tracker import class_probs as class_probs_module

N, D, C, BATCH, EPOCHS = 40, 6, 4, 8, 3
NAMES = ["ant", "bee", "cat", "dog"]


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(N, D, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()
    y[:5] = (y[:5] + 1) % C  # a few wrong labels
    return x, y


def _loop(tracker: SampleTracker | None, epochs: range = range(EPOCHS), net: nn.Module | None = None,
          opt: torch.optim.Optimizer | None = None, stop_at: tuple[int, int] | None = None,
          start_at: tuple[int, int] = (0, 0),
          ) -> tuple[nn.Module, torch.optim.Optimizer, list[tuple[torch.Tensor, torch.Tensor]]]:
    """A plain SGD loop over shuffled batches (each epoch's order from its own seed); returns the
    (indices, logits) it passed, for the recomputation. `stop_at`: (epoch, batch) to stop before;
    `start_at`: the one to resume at (the batches before it are skipped, as a resumed loop does)."""
    x, y = _data()
    if net is None:
        torch.manual_seed(0)
        net = nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C))
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
    assert opt is not None
    seen = []
    for epoch in epochs:
        order = torch.randperm(N, generator=torch.Generator().manual_seed(100 + epoch))
        for b, idx in enumerate(order.split(BATCH)):
            if stop_at == (epoch, b):
                return net, opt, seen
            if (epoch, b) < start_at:
                continue
            logits = net(x[idx])
            loss = nn.functional.cross_entropy(logits, y[idx], reduction="none")
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
            seen.append((idx, logits.detach().clone()))
            if tracker is not None:
                tracker.update(idx, logits=logits, labels=y[idx])
        if tracker is not None:
            tracker.end_epoch()
    return net, opt, seen


def _by_hand(seen: list[tuple[torch.Tensor, torch.Tensor]], rows: np.ndarray) -> pd.DataFrame:
    """The rule written out: the float64 mean softmax over the presentations; of the classes other
    than the given one, the most probable."""
    _, y = _data()
    sums, count = np.zeros((N, C)), np.zeros(N)
    for idx, logits in seen:
        sums[idx.numpy()] += torch.softmax(logits.double(), 1).numpy()
        count[idx.numpy()] += 1
    mean = sums[rows] / count[rows, None]
    mean[np.arange(len(rows)), y.numpy()[rows]] = -1
    best = mean.argmax(1)
    return pd.DataFrame({"suggested": best, "p_suggested": mean[np.arange(len(rows)), best]})


def test_the_suggestion_is_the_rule_recomputed_by_hand_and_the_recorders_own_sums() -> None:
    tracker = SampleTracker(N)
    _, _, seen = _loop(tracker)
    top = tracker.suspects(k=N, classes=NAMES)
    assert list(top.columns) == ["index", "label", "label_name", "predicted", "predicted_name", "suggested",
                                 "suggested_name", "p_suggested", "score"]
    rows = top["index"].to_numpy()
    want = _by_hand(seen, rows)
    assert top["suggested"].to_numpy(dtype=np.int64).tolist() == want["suggested"].tolist()
    assert (top["suggested"].to_numpy(dtype=np.int64) != top["label"].to_numpy(dtype=np.int64)).all()
    assert top["suggested_name"].tolist() == [NAMES[c] for c in want["suggested"]]
    np.testing.assert_allclose(top["p_suggested"].to_numpy(), want["p_suggested"], rtol=1e-6, atol=1e-7)
    # the suspects task's recorder fed the same batches holds the same sums, bit for bit
    rec = build_recorder(SUGGEST, RunContext(None, None, None, 0, torch.device("cpu"), samples=N, classes=C))
    for idx, logits in seen:
        rec.on_batch(0, idx, logits, logits.new_empty(0), None)
    assert tracker._class_probs_host is not None
    for name, values in rec.arrays().items():
        assert np.array_equal(tracker._class_probs_host[name], values), name
    # no class names: the ids as text
    assert tracker.suspects(k=3)["suggested_name"].tolist() == [str(c) for c in want["suggested"][:3]]


def test_a_resumed_tracker_and_a_discarded_epoch_give_the_uninterrupted_suggestion() -> None:
    whole = SampleTracker(N)
    _loop(whole)
    want = whole.suspects(k=N)
    first = SampleTracker(N)
    net, opt, _ = _loop(first, stop_at=(1, 3))  # mid-epoch 2
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    buffer.seek(0)
    resumed = SampleTracker(N)
    resumed.load_state_dict(torch.load(buffer, weights_only=True))
    _loop(resumed, range(1, EPOCHS), net, opt, start_at=(1, 3))  # the rest of epoch 2, then epoch 3
    pd.testing.assert_frame_equal(resumed.suspects(k=N), want)
    # an epoch that raised midway is discarded and run again: its half is in no sum
    again = SampleTracker(N)
    _loop(again)
    redo = SampleTracker(N)
    _loop(redo, stop_at=(1, 2))
    redo.discard_epoch()
    _loop(redo, range(1, EPOCHS), *_loop(None, range(1))[:2])  # from the net after epoch 1
    assert redo._class_probs is not None and again._class_probs is not None
    for name in ("prob_sum", "seen"):
        assert torch.equal(redo._class_probs.closed[name], again._class_probs.closed[name]), name
    assert float(redo._class_probs.closed["seen"][:N].max()) == EPOCHS


def test_a_loop_passing_losses_only_has_no_suggestion_said_once() -> None:
    tracker = SampleTracker(N)
    for _ in range(2):
        tracker.update(torch.arange(N), losses=torch.linspace(0, 1, N))
        tracker.end_epoch()
    with pytest.warns(UserWarning, match="no suggested label: update\\(\\) got losses= without logits="):
        top = tracker.suspects(5)
    assert list(top.columns) == ["index", "label", "predicted", "score"]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert list(tracker.suspects(5).columns) == ["index", "label", "predicted", "score"]
    # logits in some batches only: the sums would miss presentations, so none either
    mixed = SampleTracker(N)
    _, y = _data()
    mixed.update(torch.arange(N), logits=torch.zeros(N, C), labels=y)
    mixed.end_epoch()
    mixed.update(torch.arange(N), losses=torch.ones(N))
    mixed.end_epoch()
    with pytest.warns(UserWarning, match="some update\\(\\) calls came without logits="):
        assert "suggested" not in mixed.suspects(5, by="csl").columns


def test_the_size_bound_and_the_switch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(class_probs_module, "DEFAULT_LIMIT_BYTES", class_probs_module.sums_bytes(N, C) - 1)
    _, y = _data()

    def one_epoch(**kwargs: object) -> SampleTracker:
        t = SampleTracker(N, **kwargs)  # type: ignore[arg-type]
        t.update(torch.arange(N), logits=torch.eye(C)[y] * 3, labels=y)
        t.end_epoch()
        return t

    with pytest.warns(UserWarning, match=r"40 samples x 4 classes would take .* suggest=True"):
        over = one_epoch()
    with warnings.catch_warnings():  # said when decided, not again
        warnings.simplefilter("error")
        assert "suggested" not in over.suspects(5).columns
        assert "suggested" not in one_epoch(suggest=False).suspects(5).columns
        top = one_epoch(suggest=True).suspects(5)
    assert top["suggested"].notna().all() and (top["suggested"] != top["label"]).all()
    with pytest.warns(UserWarning, match="running_sums=True keeps O\\(N\\) memory"):
        assert "suggested" not in one_epoch(running_sums=True).suspects(5).columns
    assert "suggested" in one_epoch(running_sums=True, suggest=True).suspects(5).columns
    with pytest.raises(HarnessError, match=r"suggest=\.\.\.\) must be None \(by size\), True or False, got 0"):
        SampleTracker(N, suggest=0)  # type: ignore[arg-type]


def test_a_state_saved_before_the_suggested_label_resumes_without_it() -> None:
    first = SampleTracker(N)
    net, opt, _ = _loop(first, range(1))
    state = first.state_dict()
    del state["no_suggestion"], state["signals"]["class_probs"]  # as an older memprox saved it
    resumed = SampleTracker(N)
    resumed.load_state_dict(state)
    _loop(resumed, range(1, EPOCHS), net, opt)
    with pytest.warns(UserWarning, match="saved by a memprox without the suggested label"):
        assert "suggested" not in resumed.suspects(5).columns
    # sums missing from a state that recorded epochs: none, never the later epochs' mean alone
    cut = SampleTracker(N)
    net, opt, _ = _loop(cut, range(1))
    state = cut.state_dict()
    state["signals"]["class_probs"] = None
    partial = SampleTracker(N)
    partial.load_state_dict(state)
    _loop(partial, range(1, 2), net, opt)
    with pytest.warns(UserWarning, match="saved by a memprox without the suggested label"):
        assert "suggested" not in partial.suspects(5).columns
    # a state of this memprox resumed with suggest=False drops its sums
    fresh = SampleTracker(N)
    net, opt, _ = _loop(fresh, range(1))
    off = SampleTracker(N, suggest=False)
    off.load_state_dict(fresh.state_dict())
    _loop(off, range(1, 2), net, opt)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert "suggested" not in off.suspects(5).columns


def test_plot_suspects_captions_the_suggestion(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.plots

    drawn: list[pd.DataFrame] = []
    real = harness.plots.plot_suspects
    monkeypatch.setattr(harness.plots, "plot_suspects", lambda table, *a, **k: drawn.append(table) or real(
        table, *a, **k))
    tracker = SampleTracker(N)
    _loop(tracker)
    images = np.zeros((N, 8, 8), dtype=np.uint8)
    assert tracker.plot_suspects(images, k=4, classes=NAMES, path=tmp_path / "s.png").exists()
    assert drawn[0]["suggested"].tolist() == tracker.suspects(4)["suggested"].tolist()  # the caption's (x?)


def test_the_lightning_callback_gives_the_plain_loops_suggestion() -> None:
    pytest.importorskip("lightning")
    import lightning as L
    from torch.utils.data import DataLoader, TensorDataset

    from harness.integrations import WithIndex
    from harness.integrations.lightning import CSLCallback

    x, y = _data()

    class Module(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.net = nn.Sequential(nn.Linear(D, 16), nn.ReLU(), nn.Linear(16, C))
            self.seen: list[tuple[torch.Tensor, torch.Tensor]] = []

        def training_step(self, batch, batch_idx):  # type: ignore[no-untyped-def]
            xb, yb, idx = batch
            logits = self.net(xb)
            self.seen.append((idx.clone(), logits.detach().clone()))
            losses = nn.functional.cross_entropy(logits, yb, reduction="none")
            return {"loss": losses.mean(), "losses": losses, "indices": idx, "logits": logits, "labels": yb}

        def configure_optimizers(self):  # type: ignore[no-untyped-def]
            return torch.optim.SGD(self.parameters(), lr=0.5)

    csl = CSLCallback(N)
    module = Module()
    loader = DataLoader(WithIndex(TensorDataset(x, y)), batch_size=BATCH, shuffle=True,
                        generator=torch.Generator().manual_seed(1))
    L.Trainer(max_epochs=EPOCHS, callbacks=[csl], accelerator="cpu", devices=1, logger=False,
              enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False).fit(module, loader)
    top = csl.suspects(N, classes=NAMES)
    want = _by_hand(module.seen, top["index"].to_numpy())
    assert top["suggested"].to_numpy(dtype=np.int64).tolist() == want["suggested"].tolist()
    assert top["suggested_name"].tolist() == [NAMES[c] for c in want["suggested"]]
    np.testing.assert_allclose(top["p_suggested"].to_numpy(), want["p_suggested"], rtol=1e-6, atol=1e-7)


def test_the_callbacks_pass_suggest_to_their_tracker() -> None:
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    from harness.integrations.lightning import CSLCallback
    from harness.integrations.transformers import CSLTrainerCallback

    assert CSLCallback(N).tracker._suggest is None and CSLCallback(N, suggest=False).tracker._suggest is False
    hf = CSLTrainerCallback(N, suggest=True)
    hf.restart()  # a new record for each train(): the same options
    assert hf.tracker._suggest is True and CSLTrainerCallback(N).tracker._suggest is None
