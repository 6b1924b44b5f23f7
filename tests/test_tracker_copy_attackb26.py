"""`SampleTracker.copy()` must leave the tracker as it was. It used to record the batches the tracker
held unrecorded (`harness.tracker.batch_log`) into the tracker itself (through `state_dict()`), so a
peek mid-epoch followed by `discard_epoch()` kept the discarded batches' predictions: `suspects()`'s
`predicted` column differed from an unpeeked run's. The copy now records them from a copy of its own."""

from __future__ import annotations

import pytest
import torch

from harness import SampleTracker

N, CLASSES = 30, 4


def _data() -> tuple[torch.Tensor, list[torch.Tensor]]:
    gen = torch.Generator().manual_seed(0)
    labels = torch.randint(0, CLASSES, (N,), generator=gen)
    return labels, [torch.randn(N, CLASSES, generator=gen) for _ in range(3)]


def _tracked(epochs: int, labels: torch.Tensor, logits: list[torch.Tensor]) -> SampleTracker:
    tracker = SampleTracker(N, labels=labels, suggest=True)
    for epoch in range(epochs):
        tracker.update(torch.arange(N), logits=logits[epoch])
        tracker.end_epoch()
    return tracker


def test_a_peek_mid_epoch_then_a_discarded_epoch_scores_as_an_unpeeked_run() -> None:
    labels, logits = _data()
    expected = _tracked(2, labels, logits).suspects()
    tracker = _tracked(2, labels, logits)
    tracker.update(torch.arange(N // 2), logits=logits[2][: N // 2])  # the loop raises after this batch
    peek = tracker.copy()
    tracker.discard_epoch()
    got = tracker.suspects()
    assert got["predicted"].tolist() == expected["predicted"].tolist()
    assert got.equals(expected)
    peek.discard_epoch()  # the copy holds the open epoch, and drops it alike
    assert peek.suspects().equals(expected)


def test_a_copy_of_a_first_epoch_held_unrecorded_goes_on_as_the_tracker_would() -> None:
    """Nothing recorded yet: the copy decides on the suggested label's sums at its first recorded
    batch, as the tracker does (not 'saved by a memprox without the suggested label')."""
    labels, logits = _data()
    expected = _tracked(2, labels, logits).suspects()
    tracker = SampleTracker(N, labels=labels, suggest=True)
    tracker.update(torch.arange(N // 2), logits=logits[0][: N // 2])
    twin = tracker.copy()
    for t in (tracker, twin):
        t.update(torch.arange(N // 2, N), logits=logits[0][N // 2:])
        t.end_epoch()
        t.update(torch.arange(N), logits=logits[1])
        t.end_epoch()
    assert twin.suspects().equals(expected)
    assert tracker.suspects().equals(expected)
    assert expected["suggested"].notna().all()


def test_a_copy_mid_epoch_saves_resumes_and_copies_again_as_the_tracker() -> None:
    """The copy holds the tracker's unrecorded batches until it has a device: its state_dict(), and
    a copy of the copy, hold them too."""
    labels, logits = _data()
    expected = _tracked(2, labels, logits).suspects()
    tracker = _tracked(1, labels, logits)
    tracker.update(torch.arange(N // 2), logits=logits[1][: N // 2])
    resumed = SampleTracker(N, labels=labels, suggest=True)
    resumed.load_state_dict(tracker.copy().state_dict())
    for t in (resumed, tracker.copy().copy()):
        t.update(torch.arange(N // 2, N), logits=logits[1][N // 2:])
        t.end_epoch()
        assert t.suspects().equals(expected)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="a GPU")
def test_a_copy_of_a_gpu_tracker_mid_epoch_goes_on_with_the_loops_gpu_tensors() -> None:
    """Made on the host, its buffers go to the device of its next update(): a copy made mid-epoch
    and fed the loop's CUDA tensors was refused ('tensors are on cuda:0 but earlier ones were on cpu')."""
    labels, logits = _data()
    expected = _tracked(2, labels, logits).scores()
    gpu = [x.cuda() for x in logits]
    tracker = SampleTracker(N, labels=labels, suggest=True)
    tracker.update(torch.arange(N, device="cuda"), logits=gpu[0])
    tracker.end_epoch()
    tracker.update(torch.arange(N // 2, device="cuda"), logits=gpu[1][: N // 2], labels=labels[: N // 2].cuda())
    twin = tracker.copy()
    for t in (tracker, twin):
        t.update(torch.arange(N // 2, N, device="cuda"), logits=gpu[1][N // 2:], labels=labels[N // 2:].cuda())
        t.end_epoch()
        torch.testing.assert_close(torch.tensor(t.scores()["csl"].to_numpy()), torch.tensor(expected["csl"].to_numpy()))


def test_a_state_loaded_into_a_copy_made_mid_first_epoch_replaces_its_held_batches() -> None:
    labels, logits = _data()
    tracker = SampleTracker(N, labels=labels, suggest=True)
    tracker.update(torch.arange(N // 2), logits=logits[0][: N // 2] * 3)
    twin = tracker.copy()  # a new tracker still: it may load another state, which replaces all it holds
    twin.load_state_dict(_tracked(2, labels, logits).state_dict())
    twin.update(torch.arange(N), logits=logits[2])
    twin.end_epoch()
    assert twin.suspects().equals(_tracked(3, labels, logits).suspects())
