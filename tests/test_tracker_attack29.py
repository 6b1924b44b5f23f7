"""Session 29's attack on the day's tracker changes (discard_epoch and labels, refused calls, scores() refusals,
empty batches): a resumed tracker's refused eval pass, a resumed open epoch discarded, labels of a discarded
epoch, and every training-pass proxy recomputed by hand after a relabel + discard and around an empty batch."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from harness import SampleTracker
from harness.errors import HarnessError

N, C = 8, 3


def _data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 4, generator=g), torch.randint(0, C, (N,), generator=g)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Linear(4, C)


def test_a_resumed_trackers_refused_eval_pass_leaves_a_state_that_loads_and_scores_that_say_why() -> None:
    """Resumed after an eval pass, a second pass with the wrong labels is refused and changes nothing:
    state_dict() must load again (it held eval_at [2] with no flag rows: 'damaged'), the good pass still scores
    final_loss, and the tracker stays open, so eval_epoch can still be run."""
    x, y = _data()
    model = _model()
    tracker = SampleTracker(N)
    for _ in range(2):
        tracker.update(torch.arange(N), logits=model(x), labels=y)
        tracker.end_epoch()
    tracker.eval_epoch(model, (x, y))
    resumed = SampleTracker(N)
    resumed.load_state_dict(tracker.state_dict())
    with pytest.raises(HarnessError, match="other than the one they were trained on"):
        resumed.eval_epoch(model, (x, (y + 1) % C))
    again = SampleTracker(N)
    again.load_state_dict(resumed.state_dict())  # raised: 0 eval flag rows for 1 eval passes
    assert again.state_dict()["eval_at"] == [2]
    with torch.no_grad():
        want = nn.functional.cross_entropy(model(x), y, reduction="none").numpy()
    np.testing.assert_array_equal(again.scores(["final_loss"])["final_loss"].to_numpy(), want.astype(np.float64))
    assert not resumed.finished
    resumed.eval_epoch(model, (x, y))
    np.testing.assert_array_equal(resumed.scores(["final_loss"])["final_loss"].to_numpy(), want.astype(np.float64))


@pytest.mark.parametrize("resumed", [False, True])
def test_a_resumed_open_epoch_with_a_losses_only_batch_discarded_keeps_the_logit_proxies(resumed: bool) -> None:
    """A step checkpoint saved mid-epoch after a batch with losses= alone, resumed and its epoch discarded (the
    loop raised): the record is the closed epochs', all with logits, so the default scores keep aum, forgetting,
    el2n, ... as an unresumed tracker does (the resumed one scored csl alone, silently)."""
    x, y = _data()
    model = _model()
    tracker = SampleTracker(N)
    tracker.update(torch.arange(N), logits=model(x), labels=y)
    tracker.end_epoch()
    tracker.update(torch.arange(4), losses=torch.ones(4))
    if resumed:
        state = tracker.state_dict()
        tracker = SampleTracker(N)
        tracker.load_state_dict(state)
    tracker.discard_epoch()
    tracker.update(torch.arange(N), logits=model(x), labels=y)
    tracker.end_epoch()
    scores = tracker.scores()
    assert list(scores.columns) == ["index", "label", "aum", "csl", "el2n", "forgetting", "threshold_lt",
                                    "variability"]
    with torch.no_grad():
        logits = model(x)
    own = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).max(1).values
    np.testing.assert_allclose(scores["aum"].to_numpy(), -(own - other).double().numpy(), rtol=1e-6)


def test_a_state_saved_before_had_logits_closed_was_kept_still_loads() -> None:
    """A state of a memprox that did not save it loads, as before: a discard keeps the open epoch's flag."""
    x, y = _data()
    tracker = SampleTracker(N)
    tracker.update(torch.arange(N), logits=_model()(x), labels=y)
    tracker.end_epoch()
    state = tracker.state_dict()
    del state["had_logits_closed"]
    resumed = SampleTracker(N)
    resumed.load_state_dict(state)
    assert resumed._had_logits_closed is True
    state["had_logits_closed"] = "yes"
    with pytest.raises(HarnessError, match="had_logits_closed = 'yes'"):
        SampleTracker(N).load_state_dict(state)


@pytest.mark.parametrize("resumed", [False, True])
def test_a_discarded_epoch_drops_the_labels_it_gave_first_to_samples_presented_before_without_labels(
        resumed: bool) -> None:
    """Epoch 1 passes losses= alone; epoch 2 gives labels (wrong ones: read from the wrong column), a step
    checkpoint records its held batches (state_dict), and the loop raises: after discard_epoch() the rerun
    with the right labels is accepted and scored against them (it raised 'labels other than an earlier
    update() gave them': the discarded labels stayed, since the samples were presented in a closed epoch)."""
    _, y = _data()
    wrong = (y + 1) % C
    tracker = SampleTracker(N, proxies=["csl"])
    tracker.update(torch.arange(N), losses=torch.full((N,), 0.5))
    tracker.end_epoch()
    tracker.update(torch.arange(N), losses=torch.full((N,), 9.0), labels=wrong)
    state = tracker.state_dict()  # records the held batch: its labels reach the record
    if resumed:
        tracker = SampleTracker(N, proxies=["csl"])
        tracker.load_state_dict(state)
    tracker.discard_epoch()
    tracker.update(torch.arange(N), losses=torch.full((N,), 0.25), labels=y)
    tracker.end_epoch()
    scores = tracker.scores()
    np.testing.assert_array_equal(scores["label"].to_numpy(), y.numpy())
    np.testing.assert_array_equal(scores["csl"].to_numpy(), np.full(N, 0.75))


def test_labels_of_a_closed_epoch_stay_after_a_discard_of_a_resumed_state_saved_without_them() -> None:
    """A state saved before the closed epochs' labels were kept (no given_closed) resumes with the old rule:
    samples a closed epoch presented keep their label, so a discarded relabeling still cannot stick."""
    x, y = _data()
    model = _model()
    tracker = SampleTracker(N)
    tracker.update(torch.arange(N), logits=model(x), labels=y)
    tracker.end_epoch()
    tracker.update(torch.arange(N), logits=model(x), labels=(y + 1) % C)
    state = tracker.state_dict()
    del state["signals"]["given_closed"]
    resumed = SampleTracker(N)
    resumed.load_state_dict(state)
    with pytest.raises(HarnessError, match=f"labels for {N} sample"):
        resumed.end_epoch()
    resumed.discard_epoch()
    resumed.update(torch.arange(N), logits=model(x), labels=y)
    resumed.end_epoch()
    np.testing.assert_array_equal(resumed.scores()["label"].to_numpy(), y.numpy())


def _hand_scores(kept: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]], evals: list[torch.Tensor],
                 y: torch.Tensor) -> dict[str, np.ndarray]:
    """methods.md's definitions from the presentations a tracker keeps -- (indices, float32 logits, labels) per
    batch, one list per closed epoch -- and the eval-mode logits after each epoch, in float64 from the float32
    values a loop computes (csl: float32 cross-entropy summed in float64)."""
    epochs = len(kept)
    loss, margin, correct, p_label, el2n = (np.full((epochs, N), np.nan) for _ in range(5))
    probs = np.zeros((N, C))
    for e, batches in enumerate(kept):
        for idx, logits, labels in batches:
            i = idx.numpy()
            loss[e, i] = nn.functional.cross_entropy(logits, labels, reduction="none").double().numpy()
            lg = logits.double()
            own = lg.gather(1, labels[:, None]).squeeze(1)
            other = lg.scatter(1, labels[:, None], float("-inf")).max(1).values
            margin[e, i], correct[e, i] = (own - other).numpy(), (own > other).double().numpy()
            p = torch.softmax(lg, 1)
            p_label[e, i] = p.gather(1, labels[:, None]).squeeze(1).numpy()
            el2n[e, i] = (p - nn.functional.one_hot(labels, C).double()).norm(dim=1).numpy()
            probs[i] += p.numpy()
    events = np.zeros(N)
    for e in range(1, epochs):
        events += (correct[e - 1] == 1) & (correct[e] == 0)
    ever = (correct == 1).any(0)
    first = np.where(ever, (correct == 1).argmax(0), epochs) / epochs  # methods.md: [0,0,0,1,...] -> epoch 3
    eval_loss = [nn.functional.cross_entropy(lg, y, reduction="none").double().numpy() for lg in evals]
    p_last = torch.softmax(evals[-1].double(), 1).gather(1, y[:, None]).squeeze(1).numpy()
    others = probs.copy()
    others[np.arange(N), y.numpy()] = -np.inf
    return {"csl": loss.sum(0), "aum": -margin.mean(0), "forgetting": np.where(ever, events, epochs),
            "threshold_lt": first, "el2n": el2n[0], "variability": p_label.std(0),
            "csl_eval": np.sum(eval_loss, axis=0), "final_loss": eval_loss[-1], "in_confidence": 1 - p_last,
            "suggested": others.argmax(1)}


def _compare(tracker: SampleTracker, want: dict[str, np.ndarray], y: torch.Tensor) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about: every sample presented once an epoch
        scores = tracker.copy().scores()
        suspects = tracker.suspects(k=N)
    np.testing.assert_array_equal(scores["label"].to_numpy(), y.numpy())
    np.testing.assert_array_equal(scores["csl"].to_numpy(), want["csl"])
    for exact in ("forgetting", "threshold_lt"):
        np.testing.assert_array_equal(scores[exact].to_numpy(), want[exact], err_msg=exact)
    for name in ("aum", "el2n", "variability", "csl_eval", "final_loss", "in_confidence"):
        np.testing.assert_allclose(scores[name].to_numpy(), want[name], rtol=2e-6, atol=1e-7, err_msg=name)
    by_index = suspects.set_index("index").sort_index()
    np.testing.assert_array_equal(by_index["suggested"].to_numpy(), want["suggested"])


def test_every_proxy_by_hand_after_a_relabeled_epoch_discarded_and_rerun() -> None:
    """Epoch 3's first attempt relabels samples 0-3 (a label-correction step): a step checkpoint records its
    first batch, end_epoch() raises, the loop discards the epoch and reruns it with the labels trained on.
    Every proxy, the labels and the suggested label equal methods.md's definitions over the kept epochs."""
    x, y = _data(1)
    model = _model(1)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker = SampleTracker(N)
    kept: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = []
    evals: list[torch.Tensor] = []

    def batch(idx: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = model(x[idx])
        loss = nn.functional.cross_entropy(logits, labels, reduction="none")
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
        tracker.update(idx, losses=loss, logits=logits, labels=labels)
        return idx, logits.detach().clone(), labels

    for epoch in range(4):
        order = torch.randperm(N, generator=torch.Generator().manual_seed(epoch)).split(4)
        if epoch == 2:
            relabeled = y.clone()
            relabeled[:4] = (y[:4] + 1) % C
            for idx in order:
                batch(idx, relabeled[idx])
                tracker.state_dict()
            with pytest.raises(HarnessError, match="other than an earlier update"):
                tracker.end_epoch()
            tracker.discard_epoch()
        kept.append([batch(idx, y[idx]) for idx in order])
        tracker.end_epoch()
        tracker.eval_epoch(model, (x, y))
        with torch.no_grad():
            evals.append(model(x))
    _compare(tracker, _hand_scores(kept, evals, y), y)


def test_every_proxy_by_hand_with_empty_losses_only_batches() -> None:
    """A loop that filters its batches (keep = labels >= 0) passes an emptied one with losses= alone, first
    of all and in every epoch: the empty batches count for nothing, and every proxy and the suggested label
    equal methods.md's definitions over the others."""
    x, y = _data(2)
    model = _model(2)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    tracker = SampleTracker(N)
    kept: list[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = []
    evals: list[torch.Tensor] = []
    for epoch in range(4):
        tracker.update(torch.zeros(0, dtype=torch.int64), losses=torch.zeros(0))
        batches = []
        for idx in torch.randperm(N, generator=torch.Generator().manual_seed(epoch)).split(3):
            logits = model(x[idx])
            loss = nn.functional.cross_entropy(logits, y[idx], reduction="none")
            opt.zero_grad()
            loss.mean().backward()
            opt.step()
            tracker.update(idx, losses=loss, logits=logits, labels=y[idx])
            tracker.update(idx[:0], losses=loss[:0])
            batches.append((idx, logits.detach().clone(), y[idx]))
        kept.append(batches)
        tracker.end_epoch()
        tracker.eval_epoch(model, (x, y))
        with torch.no_grad():
            evals.append(model(x))
    _compare(tracker, _hand_scores(kept, evals, y), y)


def test_scores_refused_then_fixed_equal_a_tracker_never_refused() -> None:
    """scores() refused for an unknown name, for final_loss before the eval pass and for csl_eval without a
    pass after every epoch, then eval_epoch and scores() again: bitwise a never-refused tracker's scores."""
    x, y = _data(3)
    model = _model(3)
    twins = [SampleTracker(N), SampleTracker(N)]
    for _ in range(3):
        logits = model(x)
        for tracker in twins:
            tracker.update(torch.arange(N), logits=logits, labels=y)
            tracker.end_epoch()
    refused, fresh = twins
    for names, said in ((["csl", "no_such_proxy"], "no_such_proxy"), (["final_loss"], "after the last end_epoch"),
                        (["csl_eval"], "after every epoch")):
        with pytest.raises(HarnessError, match=said):
            refused.scores(names)
        assert not refused.finished
    for tracker in twins:
        tracker.eval_epoch(model, (x, y))
    names = ["csl", "aum", "forgetting", "el2n", "variability", "threshold_lt", "final_loss", "in_confidence"]
    got, want = refused.scores(names), fresh.scores(names)
    assert got.equals(want)


def test_a_refused_first_update_makes_nothing_a_checkpoint_or_a_later_call_sees() -> None:
    """A first update() refused (float labels) made the tracker's buffers: its state_dict() was no longer a new
    tracker's and load_state_dict() of the run's checkpoint was refused ('call it before the first update()').
    After a load_state_dict(), a refused update() leaves the loaded record to the next call."""
    x, y = _data(4)
    logits = _model(4)(x)
    done = SampleTracker(N)
    done.update(torch.arange(N), logits=logits, labels=y)
    done.end_epoch()
    checkpoint = done.state_dict()
    tracker = SampleTracker(N)
    with pytest.raises(HarnessError, match="labels"):
        tracker.update(torch.arange(N), logits=logits, labels=y.float())
    assert tracker.state_dict() == SampleTracker(N).state_dict()
    tracker.load_state_dict(checkpoint)  # raised: load_state_dict() resumes a new tracker
    with pytest.raises(HarnessError, match="indices"):
        tracker.update(torch.arange(N).float(), logits=logits, labels=y)
    for t in (tracker, done):
        t.update(torch.arange(N), logits=logits, labels=y)
        t.end_epoch()
    assert tracker.scores().equals(done.scores())


def test_with_indices_on_the_device_the_discards_and_the_hand_computations_hold(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same with indices held on the device (a GPU loop's; `Inputs.batch_indices` patched as in
    tests/test_tracker29.py): the device bookkeeping of presentations on a machine without a GPU."""
    from harness.tracker.inputs import Inputs

    def device_path(self: Inputs, indices: object, where: str = "update()") -> tuple[None, torch.Tensor]:
        return None, torch.as_tensor(indices).to(self.device, torch.int64)

    monkeypatch.setattr(Inputs, "batch_indices", device_path)
    for resumed in (False, True):
        test_a_resumed_open_epoch_with_a_losses_only_batch_discarded_keeps_the_logit_proxies(resumed)
        test_a_discarded_epoch_drops_the_labels_it_gave_first_to_samples_presented_before_without_labels(resumed)
    test_every_proxy_by_hand_after_a_relabeled_epoch_discarded_and_rerun()
    test_every_proxy_by_hand_with_empty_losses_only_batches()


def _same_state(a: object, b: object) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same_state(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same_state(p, q) for p, q in zip(a, b))
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a.nan_to_num(7.0), b.nan_to_num(7.0))
    return bool(a == b)


_REFUSED = {
    "index out of range": dict(indices=[0, 99], logits=2, labels=2),
    "float indices": dict(indices=torch.tensor([0.0, 1.0]), logits=2, labels=2),
    "negative label": dict(indices=[0, 1], logits=2, labels=torch.tensor([-1, 0])),
    "label past the classes": dict(indices=[0, 1], logits=2, labels=torch.tensor([C, 0])),
    "float labels": dict(indices=[0, 1], logits=2, labels=torch.tensor([0.0, 1.0])),
    "labels of another length": dict(indices=[0, 1], logits=2, labels=3),
    "logits of other classes": dict(indices=[0, 1], logits=torch.randn(2, C + 2), labels=2),
    "logits of another length": dict(indices=[0, 1], logits=3, labels=2),
    "losses of another length": dict(indices=[0, 1], losses=torch.ones(3), logits=2, labels=2),
    "2-D losses": dict(indices=[0, 1], losses=torch.ones(2, 1)),
}


@pytest.mark.filterwarnings("ignore:SampleTracker. 4 sample.s. were never presented:RuntimeWarning")
@pytest.mark.parametrize("first", [True, False])
@pytest.mark.parametrize("what", sorted(_REFUSED))
def test_a_refused_update_in_any_field_changes_no_state(what: str, first: bool) -> None:
    """Every kind of refused update(), as the first call or mid-epoch: state_dict() equals a tracker's that never
    got it, before and after the corrected call, and so do the scores."""
    if first and what == "logits of other classes":
        return  # a first batch decides the classes
    x, y = _data(5)
    logits = _model(5)(x).detach()
    refused, clean = SampleTracker(N), SampleTracker(N)
    if not first:
        for t in (refused, clean):
            t.update(torch.arange(N), logits=logits, labels=y)
            t.end_epoch()
            t.update(torch.arange(4, N), logits=logits[4:], labels=y[4:])
    call = dict(_REFUSED[what])
    indices = call.pop("indices")
    for key, value in call.items():  # a length: the first rows of the data
        if isinstance(value, int):
            call[key] = {"logits": logits, "labels": y}[key][:value]
    with pytest.raises(HarnessError):
        refused.update(indices, **call)
    assert _same_state(refused.state_dict(), clean.state_dict())
    for t in (refused, clean):
        t.update(torch.arange(4), logits=logits[:4], labels=y[:4])
    assert _same_state(refused.state_dict(), clean.state_dict())
    for t in (refused, clean):
        t.end_epoch()
    assert refused.scores().equals(clean.scores())
