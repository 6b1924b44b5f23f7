"""The own-loop walkthrough's findings: a label that changes between update() calls is refused (it
was mixed silently into every proxy), an empty proxy selection is refused, a presented sample that
a windowed proxy (el2n) cannot score is named, and a resume from a folder that is not there gives
no false "holds no csl_tracker.pt" warning."""

from __future__ import annotations

import warnings

import pytest
import torch

from harness import SampleTracker
from harness.errors import HarnessError

LOGITS = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.0]])


def _epoch(tracker: SampleTracker, labels: list[int], idx: list[int] | None = None) -> None:
    index = torch.tensor(idx if idx is not None else range(len(labels)))
    tracker.update(index, logits=LOGITS[index], labels=torch.tensor(labels))
    tracker.end_epoch()


def test_a_label_that_changes_between_updates_is_refused() -> None:
    tracker = SampleTracker(3)
    _epoch(tracker, [0, 1, 0])
    _epoch(tracker, [0, 1, 0])  # the same labels: fine
    with pytest.raises(HarnessError, match=r"update\(\) got labels for 2 sample\(s\) in epoch 3 other than an "
                                           r"earlier update\(\) gave them \(first: \[0, 2\]\)"):
        _epoch(tracker, [1, 1, 1])


def test_a_repeat_with_another_label_in_one_epoch_is_refused() -> None:
    tracker = SampleTracker(3)
    tracker.update(torch.tensor([0, 1]), logits=LOGITS[:2], labels=torch.tensor([0, 1]))
    tracker.update(torch.tensor([2, 0]), logits=LOGITS[[2, 0]], labels=torch.tensor([0, 1]))
    with pytest.raises(HarnessError, match=r"\(first: \[0\]\)"):
        tracker.end_epoch()


def test_labels_first_given_in_a_later_epoch_are_no_conflict() -> None:
    # a sample first seen in epoch 2 (a sampler over a subset in epoch 1) had no label before: -1 is no conflict
    tracker = SampleTracker(3, proxies="csl")
    _epoch(tracker, [0, 1], idx=[0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # sample 2 missed epoch 1
        _epoch(tracker, [0, 1, 0])
        assert tracker.scores()["label"].tolist() == [0, 1, 0]


def test_an_old_state_without_update_label_counts_still_loads() -> None:
    # saved by a memprox that counted conflicts only against constructor labels (None without them)
    tracker = SampleTracker(3, proxies="csl")
    _epoch(tracker, [0, 1, 0])
    state = tracker.state_dict()
    state["signals"]["label_conflicts"] = None
    resumed = SampleTracker(3, proxies="csl")
    resumed.load_state_dict(state)
    _epoch(resumed, [0, 1, 0])
    _epoch(tracker, [0, 1, 0])
    assert resumed.scores()["csl"].tolist() == tracker.scores()["csl"].tolist()


@pytest.mark.parametrize("proxies", [[], "", ()])
def test_an_empty_proxy_selection_is_refused(proxies) -> None:
    with pytest.raises(HarnessError, match="selects no proxy"):
        SampleTracker(3, proxies=proxies)
    tracker = SampleTracker(3)
    _epoch(tracker, [0, 1, 0])
    with pytest.raises(HarnessError, match="selects no proxy"):
        tracker.scores(proxies)


def test_a_presented_sample_outside_el2ns_window_is_named() -> None:
    tracker = SampleTracker(3, proxies="csl,el2n")  # 3 epochs: the window is the first epoch
    _epoch(tracker, [0, 1], idx=[0, 1])
    _epoch(tracker, [0, 1, 0])
    _epoch(tracker, [0, 1, 0])
    with pytest.warns(RuntimeWarning, match=r"1 presented sample\(s\) score NaN in el2n \(1\) \(first: \[2\]\)"):
        scores = tracker.scores()
    assert scores["el2n"].isna().tolist() == [False, False, True] and scores["csl"].notna().all()


def test_a_full_epoch_raises_no_window_warning() -> None:
    tracker = SampleTracker(3, proxies="csl,el2n")
    for _ in range(3):
        _epoch(tracker, [0, 1, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert tracker.scores()["el2n"].notna().all()


def test_resuming_from_a_missing_folder_leaves_the_message_to_the_trainer(tmp_path) -> None:
    pytest.importorskip("transformers")
    from harness.integrations.transformers import CSLTrainerCallback

    callback = CSLTrainerCallback(3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        callback.load(tmp_path / "checkpoint-30")  # not there: transformers raises its own error next
    (tmp_path / "checkpoint-20").mkdir()
    with pytest.warns(RuntimeWarning, match="holds no csl_tracker.pt"):
        callback.load(tmp_path / "checkpoint-20")
