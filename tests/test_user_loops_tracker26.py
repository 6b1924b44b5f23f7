"""A user's own loops with `SampleTracker` (docs/own-training-loop.md), each checked against the loop's
own per-sample values, and the labels a loop may get wrong: -100 (cross_entropy's ignore_index), ids
outside the classes, float ids. On a GPU an id outside the classes stops the process with a
device-side assert inside the loss; the tracker reads device labels when it records them, before any
loss of its own. On the CPU that path is reached by skipping update()'s host check (as device labels
skip it) and by a cross_entropy that fails as CUDA's does."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from torch import nn
from torch.utils.data import DataLoader, TensorDataset, WeightedRandomSampler

from harness import SampleTracker
from harness.errors import HarnessError
from harness.integrations import WithIndex
from harness.tracker.inputs import Inputs

_CROSS_ENTROPY = nn.functional.cross_entropy


def _digits(n: int = 240) -> tuple[torch.Tensor, torch.Tensor]:
    digits = load_digits()
    return torch.tensor(digits.data[:n] / 16.0, dtype=torch.float32), torch.tensor(digits.target[:n])


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


def _cuda_like_cross_entropy(logits: torch.Tensor, target: torch.Tensor, *args: object, **kwargs: object) -> object:
    """cross_entropy as on CUDA: -100 is skipped (a loss of 0), any other id outside the classes
    ends the process (here: an AssertionError the test would report)."""
    bad = ((target < 0) | (target >= logits.shape[-1])) & (target != -100)
    assert not bool(bad.any()), "device-side assert: a label outside the classes reached cross_entropy"
    return _CROSS_ENTROPY(logits, target, *args, **kwargs)  # type: ignore[arg-type]


def test_autocast_bf16_with_gradient_accumulation_sums_the_loops_own_losses() -> None:
    x, y = _digits()
    model = _model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    loader = DataLoader(WithIndex(TensorDataset(x, y)), batch_size=16, shuffle=True,
                        generator=torch.Generator().manual_seed(1))
    tracker, own = SampleTracker(len(y)), np.zeros(len(y))
    for _ in range(3):
        for step, (xb, yb, idx) in enumerate(loader):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                logits = model(xb)
                losses = nn.functional.cross_entropy(logits, yb, reduction="none")
            (losses.mean() / 2).backward()  # two micro-batches per step: only the backpropagated mean is divided
            if step % 2:
                opt.step()
                opt.zero_grad()
            tracker.update(idx, losses=losses, logits=logits, labels=yb)
            own[idx.numpy()] += losses.detach().double().numpy()
        tracker.end_epoch()
    assert logits.dtype == torch.bfloat16
    np.testing.assert_array_equal(tracker.scores()["csl"].to_numpy(), own)


def test_weighted_sampler_with_drop_last_keeps_each_samples_first_presentation() -> None:
    x, y = _digits(120)
    model, n = _model(), len(y)
    weights = torch.ones(n)
    weights[:10] = 40.0  # samples 0..9 come several times an epoch
    sampler = WeightedRandomSampler(weights, n, replacement=True, generator=torch.Generator().manual_seed(2))
    loader = DataLoader(WithIndex(TensorDataset(x, y)), batch_size=32, sampler=sampler, drop_last=True)
    tracker, own, epochs = SampleTracker(n), np.zeros(n), np.zeros(n)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            seen: set[int] = set()
            for xb, yb, idx in loader:
                logits = model(xb)
                losses = nn.functional.cross_entropy(logits, yb, reduction="none")
                tracker.update(idx, losses=losses, logits=logits, labels=yb)
                for i, loss in zip(idx.tolist(), losses.detach().double().tolist()):
                    if i not in seen:
                        seen.add(i)
                        own[i] += loss
                        epochs[i] += 1
            tracker.end_epoch()
        scores = tracker.scores()
    said = " ".join(str(w.message) for w in caught)
    assert "presented more than once" in said and "fewer than all 2 epochs" in said
    np.testing.assert_array_equal(scores["csl"].to_numpy(), own)
    np.testing.assert_array_equal(tracker.epochs_presented(), epochs)


def test_a_dataset_that_grows_past_n_is_refused_naming_its_final_size() -> None:
    x, y = _digits(60)
    tracker = SampleTracker(40)
    tracker.update(torch.arange(40), logits=torch.zeros(40, 10), labels=y[:40])
    tracker.end_epoch()
    with pytest.raises(HarnessError, match=r"sample index 59 is outside \[0, 40\).*its final size, if it grows"):
        tracker.update(torch.arange(60), logits=torch.zeros(60, 10), labels=y)


def test_ignore_index_labels_with_losses_alone_are_refused_not_scored_lowest() -> None:
    """Before: update(idx, losses=, labels=) with -100 took the loss of 0 that cross_entropy gives an
    ignored row, and the sample scored csl 0 (the least suspicious), label None."""
    x, y = _digits(8)
    y = y.clone()
    y[3] = -100
    logits = _model()(x)
    losses = nn.functional.cross_entropy(logits, y, reduction="none")  # -100: loss 0
    tracker = SampleTracker(8)
    with pytest.raises(HarnessError, match=r"update\(\): label -100 is not a class id.*ignore_index.*labels >= 0"):
        tracker.update(torch.arange(8), losses=losses, labels=y)
    keep = y >= 0  # the fix the message gives: the ignored sample is left out
    tracker.update(torch.arange(8)[keep], losses=losses[keep], labels=y[keep])
    tracker.end_epoch()
    with pytest.warns(RuntimeWarning, match=r"1 sample\(s\) were never presented \(first: \[3\]\)"):
        csl = tracker.scores()["csl"].to_numpy()
    np.testing.assert_array_equal(csl[keep.numpy()], losses[keep].detach().double().numpy())
    np.testing.assert_array_equal(tracker.epochs_presented(), keep.int().numpy())


@pytest.mark.parametrize("bad", [12, -100])
@pytest.mark.parametrize("with_losses", [False, True])
def test_device_labels_outside_the_classes_are_refused_before_the_trackers_loss(
    monkeypatch: pytest.MonkeyPatch, bad: int, with_losses: bool
) -> None:
    """Labels update() cannot read without a sync (a GPU's) are read when the batches are recorded:
    before, they went into the tracker's cross_entropy (a device-side assert on CUDA) or, -100,
    into its gathers (an IndexError here, an assert on CUDA)."""
    monkeypatch.setattr(Inputs, "check_host_labels", staticmethod(lambda labels, classes: None))
    monkeypatch.setattr(nn.functional, "cross_entropy", _cuda_like_cross_entropy)
    x, y = _digits(8)
    logits = _model()(x).detach()
    bad_y = y.clone()
    bad_y[5] = bad
    tracker = SampleTracker(8)
    losses = _CROSS_ENTROPY(logits, y, reduction="none") if with_losses else None
    tracker.update(torch.arange(8), losses=losses, logits=logits, labels=bad_y)
    with pytest.raises(HarnessError, match=rf"update\(\): label {bad} is outside \[0, 10\)"):
        tracker.end_epoch()
    with pytest.raises(HarnessError, match=rf"label {bad} is outside"):  # the batch stays refused
        tracker.end_epoch()
    tracker.discard_epoch()  # the message's way on: drop the epoch, rerun it with class ids
    tracker.update(torch.arange(8), losses=losses, logits=logits, labels=y)
    tracker.end_epoch()
    np.testing.assert_allclose(tracker.scores()["csl"], _CROSS_ENTROPY(logits, y, reduction="none").double(),
                               rtol=1e-6)


def test_float_labels_are_refused_naming_long() -> None:
    tracker = SampleTracker(4)
    with pytest.raises(HarnessError, match=r"labels must be integer class ids, got torch.float32; .*labels.long\(\)"):
        tracker.update(torch.arange(4), logits=torch.zeros(4, 3), labels=torch.tensor([0.0, 1.0, 2.0, 1.0]))


@pytest.mark.parametrize("bad", [-100, 2])
def test_hf_training_labels_are_checked_before_the_loss(monkeypatch: pytest.MonkeyPatch, bad: int) -> None:
    """CSLTrainer's per-sample loss: before, a negative id was replaced by C and an id past the classes
    went into cross_entropy as it was, where a GPU ends in a device-side assert; now one line first."""
    from harness.integrations._hf_batch import per_sample_cross_entropy

    monkeypatch.setattr(nn.functional, "cross_entropy", _cuda_like_cross_entropy)
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0]])
    with pytest.raises(HarnessError, match=rf"the batch's labels run from {min(bad, 1)} to {max(bad, 1)}, but the "
                                           r"model has 2 outputs"):
        per_sample_cross_entropy(logits, torch.tensor([bad, 1]))
    eval_losses = per_sample_cross_entropy(logits, torch.tensor([-100, 1]), training=False)  # eval skips -100
    assert eval_losses[0].item() == 0.0
    assert eval_losses[1].item() == pytest.approx(_CROSS_ENTROPY(logits[1:], torch.tensor([1])).item())


def test_scores_mid_training_come_from_a_copy_while_the_tracker_goes_on() -> None:
    """scores() ends recording; a loop that peeked after an epoch and went on was told only to make a
    new tracker, losing the run's record. `copy()` holds the record so far, with the same arguments:
    it scores as the tracker would have at that epoch, and the tracker goes on to score as an
    unpeeked one."""
    gen = torch.Generator().manual_seed(0)
    n, epochs = 30, 4
    labels = torch.randint(0, 4, (n,), generator=gen)
    logits = [torch.randn(n, 4, generator=gen) for _ in range(epochs)]

    def tracked(stop: int) -> SampleTracker:
        tracker = SampleTracker(n, proxies="csl,aum,forgetting", labels=labels)
        for epoch in range(stop):
            tracker.update(torch.arange(n), logits=logits[epoch])
            tracker.end_epoch()
        return tracker

    peeked = tracked(2)
    peeked.scores()
    with pytest.raises(HarnessError, match=r"after the tracker finished.*go on with the tracker: "
                                           r"tracker\.copy\(\)\.scores\(\)"):
        peeked.update(torch.arange(n), logits=logits[2])
    tracker = tracked(2)
    assert tracker.copy().scores().equals(tracked(2).scores())
    tracker.update(torch.arange(n // 2), logits=logits[2][: n // 2])
    with pytest.raises(HarnessError, match="the last epoch is still open"):  # the copy holds the open epoch
        tracker.copy().scores()
    tracker.update(torch.arange(n // 2, n), logits=logits[2][n // 2:])
    tracker.end_epoch()
    tracker.update(torch.arange(n), logits=logits[3])
    tracker.end_epoch()
    assert tracker.scores().equals(tracked(epochs).scores())
    assert sorted(tracker.scores().columns) == ["aum", "csl", "forgetting", "index", "label"]


def test_numpy_labels_are_refused_naming_the_conversion() -> None:
    """Indices may come as numpy arrays (a numpy collate); labels from the same collate were refused
    without the conversion that fixes them."""
    tracker = SampleTracker(3)
    with pytest.raises(HarnessError, match=r"labels must be a torch tensor, got ndarray; convert it with "
                                           r"torch.as_tensor\(labels, device='cpu'\)"):
        tracker.update(np.arange(3), logits=torch.zeros(3, 2), labels=np.array([0, 1, 1]))
    tracker.update(np.arange(3), logits=torch.zeros(3, 2), labels=torch.as_tensor(np.array([0, 1, 1]), device="cpu"))
    tracker.end_epoch()
    np.testing.assert_allclose(tracker.scores()["csl"], np.full(3, np.log(2)), rtol=1e-6)


_RESUME = '''
import sys, numpy as np, torch
from harness import SampleTracker
saved = torch.load(sys.argv[1], weights_only=True)
tracker = SampleTracker(len(saved["labels"]), proxies="csl,aum,forgetting")
tracker.load_state_dict(saved["tracker"])
for idx, logits in saved["rest"]:
    if len(idx):
        tracker.update(idx, logits=logits, labels=saved["labels"][idx])
    else:
        tracker.end_epoch()
np.save(sys.argv[2], tracker.scores()[["csl", "aum", "forgetting"]].to_numpy())
'''


@pytest.mark.slow  # a new Python process imports torch and memprox
def test_a_state_saved_mid_epoch_with_torch_save_resumes_in_a_new_process(tmp_path) -> None:
    import subprocess
    import sys

    gen = torch.Generator().manual_seed(3)
    n = 40
    labels = torch.randint(0, 5, (n,), generator=gen)
    batches = []  # three epochs of four shuffled batches; an empty batch marks an epoch's end
    for _ in range(3):
        order = torch.randperm(n, generator=gen)
        batches += [(order[i:i + 10], torch.randn(10, 5, generator=gen)) for i in range(0, n, 10)]
        batches.append((torch.zeros(0, dtype=torch.int64), torch.zeros(0, 5)))

    def feed(tracker: SampleTracker, part: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        for idx, logits in part:
            if len(idx):
                tracker.update(idx, logits=logits, labels=labels[idx])
            else:
                tracker.end_epoch()

    whole = SampleTracker(n, proxies="csl,aum,forgetting")
    feed(whole, batches)
    first = SampleTracker(n, proxies="csl,aum,forgetting")
    feed(first, batches[:7])  # one epoch and two batches of the second
    torch.save({"tracker": first.state_dict(), "labels": labels, "rest": batches[7:]}, tmp_path / "ckpt.pt")
    (tmp_path / "resume.py").write_text(_RESUME)
    done = subprocess.run([sys.executable, str(tmp_path / "resume.py"), str(tmp_path / "ckpt.pt"),
                           str(tmp_path / "scores.npy")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = np.load(tmp_path / "scores.npy")
    np.testing.assert_array_equal(resumed, whole.scores()[["csl", "aum", "forgetting"]].to_numpy())
