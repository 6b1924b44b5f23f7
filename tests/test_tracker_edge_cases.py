"""SampleTracker edge cases from the audit: labels that disagree with the scores, samples presented
more than once in an epoch, integer dtypes other than int64, an eval pass before training, and the
papercuts of the API (proxy strings, eval_epoch's inputs, plot_suspects' class names)."""

from __future__ import annotations

import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from harness import SampleTracker
from harness.errors import HarnessError
from harness.tracker.selection import trackable

LOGITS = torch.tensor([[4.0, 0.0], [0.0, 4.0]])  # predicts 0 for sample 0, 1 for sample 1
CLEAN, NOISY = torch.tensor([0, 1]), torch.tensor([1, 1])  # sample 0 trained on a flipped label


def _trained(labels: torch.Tensor, epochs: int = 2, **kwargs) -> SampleTracker:
    t = SampleTracker(2, **kwargs)
    for _ in range(epochs):
        t.update([0, 1], logits=LOGITS, labels=labels)
        t.end_epoch()
    return t


# --- 1. one label per sample ------------------------------------------------------------------------

def test_update_labels_other_than_the_constructors_are_an_error() -> None:
    t = SampleTracker(2, labels=CLEAN)
    t.update([0, 1], logits=LOGITS, labels=NOISY)
    with pytest.raises(HarnessError, match=r"labels other than SampleTracker\(labels=...\) for 1 sample\(s\) in "
                                           r"epoch 1 \(first: \[0\]\).*pass the same labels to both"):
        t.end_epoch()


def test_update_labels_equal_to_the_constructors_or_left_out_score_alike() -> None:
    given, implied = SampleTracker(2, labels=CLEAN), SampleTracker(2, labels=CLEAN.numpy().astype(np.uint8))
    for _ in range(2):
        given.update([0, 1], logits=LOGITS, labels=CLEAN.to(torch.int32))
        implied.update([0, 1], logits=LOGITS)  # labels from the constructor
        for t in (given, implied):
            t.end_epoch()
    for table in (given.scores(["aum", "forgetting"]), implied.scores(["aum", "forgetting"])):
        assert table["label"].tolist() == [0, 1]
        assert table["aum"].tolist() == [-4.0, -4.0] and table["forgetting"].tolist() == [0.0, 0.0]


def test_eval_labels_other_than_the_trained_ones_are_refused_and_not_recorded() -> None:
    t = _trained(NOISY)
    t.eval_epoch(nn.Identity(), (LOGITS, NOISY))  # a good pass for this epoch ...
    with pytest.raises(HarnessError, match=r"1 sample\(s\) have a label other than the one they were trained on.*"
                                           r"the pass was not recorded"):
        t.eval_epoch(nn.Identity(), (LOGITS, CLEAN))  # ... then a refused one, which changes nothing
    ce = nn.functional.cross_entropy(LOGITS, NOISY, reduction="none").numpy()
    np.testing.assert_allclose(t.scores(["final_loss"])["final_loss"], ce, rtol=1e-6)  # the good pass stands


def test_eval_labels_equal_to_the_trained_ones_give_final_loss_against_them() -> None:
    t = _trained(NOISY)
    t.eval_epoch(nn.Identity(), [(LOGITS[[1]], NOISY[[1]], [1]), (LOGITS[[0]], NOISY[[0]], [0])])
    table = t.scores(["csl", "final_loss", "in_confidence"])
    assert table["label"].tolist() == [1, 1]
    ce = nn.functional.cross_entropy(LOGITS, NOISY, reduction="none").numpy()
    np.testing.assert_allclose(table["final_loss"], ce, rtol=1e-6)  # sample 0: against its label 1, 4.018
    np.testing.assert_allclose(table["csl"], 2 * ce, rtol=1e-6)
    assert table["final_loss"][0] == pytest.approx(4.01815, abs=1e-4)


def test_eval_labels_are_checked_against_the_constructors_before_training() -> None:
    t = SampleTracker(2, labels=CLEAN)
    with pytest.raises(HarnessError, match=r"1 sample\(s\) have a label other than"):
        t.eval_epoch(nn.Identity(), (LOGITS, NOISY))


# --- 2. a sample presented twice in an epoch keeps its first presentation, as under DDP -----------

def test_repeats_keep_the_first_presentation_and_warn_once() -> None:
    t = SampleTracker(3, proxies=["csl"])
    t.update(torch.tensor([0, 0, 0, 1]), losses=torch.tensor([1.0, 2.0, 3.0, 5.0]))  # in one batch
    t.update([2, 1], losses=torch.tensor([7.0, 11.0]))  # sample 1 again, in a later batch
    with pytest.warns(RuntimeWarning, match=r"2 sample\(s\) were presented more than once in epoch 1 "
                                            r"\(first: \[0, 1\]\); each keeps its first presentation"):
        t.end_epoch()
    t.update(torch.tensor([1, 1, 0, 2]), losses=torch.tensor([10.0, 20.0, 30.0, 40.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.end_epoch()  # said once: the second epoch with repeats is quiet
    assert t.scores()["csl"].tolist() == [1.0 + 30.0, 5.0 + 10.0, 7.0 + 40.0]


def test_repeats_keep_the_first_presentation_of_every_signal() -> None:
    """Epoch 1: correct, then wrong; epoch 2: correct. The wrong repeat is dropped: never forgotten,
    learned in epoch 1, margin 5 twice."""
    ok, bad, y = torch.tensor([[5.0, 0.0]]), torch.tensor([[0.0, 5.0]]), torch.tensor([0])
    t = SampleTracker(1, proxies=["forgetting", "threshold_lt", "aum"])
    t.update([0], logits=ok, labels=y)
    t.update([0], logits=bad, labels=y)
    with pytest.warns(RuntimeWarning, match="presented more than once"):
        t.end_epoch()
    t.update([0], logits=ok, labels=y)
    t.end_epoch()
    row = t.scores().iloc[0]
    assert (row["forgetting"], row["threshold_lt"], row["aum"]) == (0.0, 0.0, -5.0)


def test_allowed_repeats_cover_a_distributed_samplers_padding() -> None:
    t = SampleTracker(3, proxies=["csl"])
    t.allowed_repeats = 1  # what DistributedRecorder sets for 2 ranks
    t.update([0, 1, 2, 0], losses=torch.tensor([1.0, 2.0, 3.0, 4.0]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t.end_epoch()
    t.update([0, 1, 2, 0, 1], losses=torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0]))
    with pytest.warns(RuntimeWarning, match=r"2 sample\(s\) were presented more than once in epoch 2"):
        t.end_epoch()
    assert t.scores()["csl"].tolist() == [2.0, 4.0, 6.0]


def ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    """Two ranks whose shards repeat samples 0 and 1 (more than a sampler's padding): every rank's
    scores are those of one process fed the gathered batches in rank order, and it warns."""
    from harness.integrations._common import DistributedRecorder

    torch.distributed.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        tracker = SampleTracker(4, proxies=["csl"])
        rec = DistributedRecorder(tracker)
        shards = {0: [([0, 1], [1.0, 2.0]), ([2], [3.0])], 1: [([0, 3], [10.0, 4.0]), ([1], [20.0])]}
        for idx, loss in shards[rank]:
            rec.update(torch.tensor(idx), losses=torch.tensor(loss))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            rec.end_epoch()
        said = [str(w.message) for w in caught if "presented more than once" in str(w.message)]
        np.save(f"{out}.rank{rank}.npy", np.array([*tracker.scores()["csl"].to_numpy(), len(said)]))
    finally:
        torch.distributed.destroy_process_group()


def test_ddp_and_one_process_keep_the_same_presentation(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    here = str(Path(__file__).parent)
    sys.path.insert(0, here)  # the spawned processes import this module by name
    try:
        from test_tracker_edge_cases import ddp_worker as worker

        mp.spawn(worker, args=(2, f"file://{tmp_path / 'rendezvous'}", str(tmp_path / "csl")), nprocs=2, join=True)
    finally:
        sys.path.remove(here)
    one = SampleTracker(4, proxies=["csl"])
    one.update([0, 1, 0, 3], losses=torch.tensor([1.0, 2.0, 10.0, 4.0]))  # the gathered batches, rank 0 first
    one.update([2, 1], losses=torch.tensor([3.0, 20.0]))
    with pytest.warns(RuntimeWarning, match=r"2 sample\(s\) were presented more than once"):
        one.end_epoch()
    want = one.scores()["csl"].tolist()
    assert want == [1.0, 2.0, 3.0, 4.0]
    for rank in (0, 1):
        got = np.load(tmp_path / f"csl.rank{rank}.npy")
        assert got[:4].tolist() == want and got[4] == 1  # same scores, one warning (2 repeats > 1 of padding)


# --- 3. integer dtypes ------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", [torch.int32, torch.int16, torch.int8, torch.uint8])
def test_integer_labels_of_any_width_score_as_int64(dtype: torch.dtype) -> None:
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 0.0, 2.0], [0.0, 1.0, 0.0]])
    y = torch.tensor([0, 2, 0])
    tables = []
    for labels in (y, y.to(dtype)):
        t = SampleTracker(3)
        t.update([0, 1, 2], logits=logits, labels=labels)
        t.end_epoch()
        t.eval_epoch(nn.Identity(), (logits, labels))
        tables.append(t.scores())
    assert tables[0].equals(tables[1])
    ce = nn.functional.cross_entropy(logits, y, reduction="none").numpy()
    np.testing.assert_allclose(tables[1]["csl"], ce, rtol=1e-6)
    assert tables[1]["label"].tolist() == [0, 2, 0]


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32, np.uint64, np.int16])
def test_numpy_indices_of_any_integer_dtype(dtype) -> None:
    t = SampleTracker(4, proxies=["csl"])
    t.update(np.array([3, 1], dtype=dtype), losses=torch.tensor([1.0, 2.0]))
    t.end_epoch()
    assert t.scores()["csl"].tolist() == [0.0, 2.0, 0.0, 1.0]


def test_unsigned_indices_out_of_range_or_unsupported_are_clear() -> None:
    t = SampleTracker(4, proxies=["csl"])
    with pytest.raises(HarnessError, match=r"sample index 18446744073709551615 is outside \[0, 4\)"):
        t.update(np.array([0, 2**64 - 1], dtype=np.uint64), losses=torch.ones(2))
    with pytest.raises(HarnessError, match=r"got torch.uint64 \(2,\); convert them with .long\(\)"):
        t.update(torch.tensor([0, 1], dtype=torch.uint64), losses=torch.ones(2))
    t.update(torch.tensor([0, 1], dtype=torch.uint32), losses=torch.tensor([5.0, 6.0]))
    t.end_epoch()
    assert t.scores()["csl"].tolist() == [5.0, 6.0, 0.0, 0.0]


# --- 4. an eval pass before training ----------------------------------------------------------------

def _loop(baseline: bool, inference: bool) -> SampleTracker:
    torch.manual_seed(0)
    x, y = torch.randn(6, 4), torch.tensor([0, 1, 2, 0, 1, 2])
    model = nn.Linear(4, 3)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    t = SampleTracker(6)
    if baseline:
        with torch.inference_mode(inference):
            t.eval_epoch(model, (x, y))
    for _ in range(3):
        logits = model(x)
        loss = nn.functional.cross_entropy(logits, y, reduction="none")
        opt.zero_grad()
        loss.mean().backward()
        opt.step()
        t.update(torch.arange(6), losses=loss, logits=logits, labels=y)
        t.end_epoch()
        with torch.inference_mode(inference):
            t.eval_epoch(model, (x, y))
    return t


@pytest.mark.parametrize("inference", [False, True], ids=["no_grad", "inference_mode"])
def test_a_baseline_eval_pass_is_no_epochs_pass(inference: bool) -> None:
    want = _loop(baseline=False, inference=False).scores()
    got = _loop(baseline=True, inference=inference).scores()
    assert "csl_eval" in got.columns and list(got.columns) == list(want.columns)
    assert got.equals(want)
    assert got["csl_eval"].gt(0).all()


def test_a_baseline_under_inference_mode_leaves_the_buffers_writable() -> None:
    y = torch.tensor([0, 1, 2])
    t = SampleTracker(3)
    with torch.inference_mode():
        t.eval_epoch(nn.Identity(), (torch.eye(3), y))
    t.update([0, 1, 2], logits=torch.eye(3) * 2, labels=y)
    t.end_epoch()
    t.eval_epoch(nn.Identity(), (torch.eye(3), y))  # outside inference_mode, into the rows made inside it
    table = t.scores(["csl", "csl_eval", "final_loss"])
    ce = nn.functional.cross_entropy(torch.eye(3), y, reduction="none").numpy()
    np.testing.assert_allclose(table["csl_eval"], ce, rtol=1e-6)
    np.testing.assert_allclose(table["final_loss"], ce, rtol=1e-6)


# --- 6. papercuts ---------------------------------------------------------------------------------

def test_proxies_as_a_comma_string_or_all() -> None:
    assert [p.label for p in SampleTracker(4, proxies="csl,aum")._selection.selected] == ["csl", "aum"]
    assert [p.label for p in SampleTracker(4, proxies=["csl, aum"])._selection.selected] == ["csl", "aum"]
    every = [p.label for p in SampleTracker(4, proxies=" all ")._selection.selected]
    assert every == [p.label for p in trackable()] and {"csl", "csl_eval", "aum", "final_loss"} <= set(every)
    assert [p.label for p in SampleTracker(4, proxies="all", running_sums=True)._selection.selected] == ["csl"]
    t = _trained(CLEAN)
    assert list(t.scores("csl,aum").columns) == ["index", "label", "csl", "aum"]
    with pytest.raises(HarnessError, match="or Proxy objects, got int"):
        SampleTracker(4, proxies=["csl", 3])


@pytest.mark.parametrize(
    ("y", "batch_size", "message"),
    [
        (torch.tensor([0.0, 1.0]), 1024, r"labels must be integer class ids, got torch.float32"),
        (torch.tensor([0, 2]), 1024, r"1 label\(s\) outside \[0, 2\)"),
        (torch.tensor([-1, 1]), 1024, r"1 label\(s\) outside \[0, 2\)"),
        (CLEAN, 0, r"batch_size=...\) must be an integer >= 1, got 0"),
        (CLEAN, True, r"batch_size=...\) must be an integer >= 1, got True"),
    ],
)
def test_eval_epoch_checks_its_inputs_like_update(y: torch.Tensor, batch_size: int, message: str) -> None:
    t = _trained(CLEAN, epochs=1)
    with pytest.raises(HarnessError, match=message):
        t.eval_epoch(nn.Identity(), (LOGITS, y), batch_size=batch_size)
    with pytest.raises(HarnessError, match=r"labels have shape \(1,\) but must be \(2,\)"):
        t.eval_epoch(nn.Identity(), [(LOGITS, CLEAN[:1], [0, 1])])
    with pytest.raises(HarnessError, match=r"model returned \(2,\) for a batch of 2"):
        t.eval_epoch(nn.Identity(), (LOGITS[:, 0], CLEAN))
    t.eval_epoch(nn.Identity(), (LOGITS, CLEAN), batch_size=np.int64(1))  # still usable after refusals
    np.testing.assert_allclose(t.scores(["final_loss"])["final_loss"], [0.01815] * 2, atol=1e-5)


def test_plot_suspects_needs_a_name_per_class(tmp_path: Path) -> None:
    t = SampleTracker(3)
    t.update([0, 1, 2], logits=torch.eye(3), labels=torch.tensor([0, 1, 2]))
    t.end_epoch()
    images = np.zeros((3, 8, 8))
    with pytest.raises(HarnessError, match=r"names 1 class\(es\) but the captions need class ids 0..2"):
        t.plot_suspects(images, k=3, classes=["a"], path=tmp_path / "p.png")
    assert t.plot_suspects(images, k=3, classes=["a", "b", "c"], path=tmp_path / "p.png").exists()


# --- CUDA: the same checks without a host sync per batch --------------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_repeats_labels_and_eval_checks() -> None:
    dev = torch.device("cuda")
    t = SampleTracker(3, proxies=["csl"])
    t.update(torch.tensor([0, 0, 1], device=dev), losses=torch.tensor([1.0, 2.0, 3.0], device=dev))
    t.update(torch.tensor([1, 2], device=dev), losses=torch.tensor([4.0, 5.0], device=dev))
    with pytest.warns(RuntimeWarning, match=r"2 sample\(s\) were presented more than once"):
        t.end_epoch()
    assert t.scores()["csl"].tolist() == [1.0, 3.0, 5.0]
    fixed = SampleTracker(2, labels=CLEAN)
    fixed.update(torch.arange(2, device=dev), logits=LOGITS.to(dev), labels=NOISY.to(dev))
    with pytest.raises(HarnessError, match=r"for 1 sample\(s\) in epoch 1"):
        fixed.end_epoch()
    cuda = SampleTracker(2)
    cuda.update(torch.arange(2, device=dev), logits=LOGITS.to(dev), labels=CLEAN.to(dev))
    cuda.end_epoch()
    with pytest.raises(HarnessError, match=r"1 label\(s\) outside \[0, 2\)"):  # clamped, not a device assert
        cuda.eval_epoch(nn.Identity(), (LOGITS.to(dev), torch.tensor([0, 5], device=dev)))
    cuda.eval_epoch(nn.Identity(), (LOGITS.to(dev), CLEAN.to(dev)))
    np.testing.assert_allclose(cuda.scores(["final_loss"])["final_loss"], [0.01815] * 2, atol=1e-5)


def test_host_and_device_presentation_rules_agree() -> None:
    # host indices take the numpy path, GPU ones the device path (tested here on CPU tensors): the
    # same batches with repeats within and across batches give the same slots and the same count
    from harness.tracker.signals import Presentations

    rng = np.random.default_rng(0)
    n = 50
    host_side, device_side = Presentations(n, torch.device("cpu")), Presentations(n, torch.device("cpu"))
    for epoch in range(3):
        for _ in range(6):
            idx = torch.as_tensor(rng.integers(0, n, size=int(rng.integers(1, 20))))
            got = host_side.slots(idx, idx.numpy())
            want = device_side.slots(idx)
            assert torch.equal(got, want), (epoch, idx)
        assert int(host_side.repeated()) == int(device_side.repeated()) > 0
        host_side.reset()
        device_side.reset()
    once = torch.randperm(n)[:20]
    assert host_side.slots(once, once.numpy()) is once  # the usual batch: no tensor op at all
    assert int(host_side.repeated()) == 0


def _resumed_on(device: str, tensors_on: str) -> SampleTracker:
    """One epoch recorded, its state loaded onto `device` (as written), a second epoch on `tensors_on`."""
    g = torch.Generator().manual_seed(0)
    losses = torch.rand(2, 8, generator=g)
    first = SampleTracker(8, proxies=["csl"])
    first.update(torch.arange(8), losses=losses[0])
    first.end_epoch()
    resumed = SampleTracker(8, proxies=["csl"])
    resumed.load_state_dict(first.state_dict(), device=device)
    resumed.update(torch.arange(8, device=tensors_on), losses=losses[1].to(tensors_on))
    resumed.end_epoch()
    np.testing.assert_array_equal(resumed.scores()["csl"].to_numpy(),
                                  losses[0].double().numpy() + losses[1].double().numpy())
    return resumed


def test_a_state_loaded_onto_cpu_0_takes_the_cpu_tensors_that_follow() -> None:
    """Hugging Face's `args.device` is `cpu:0` under DDP on CPUs: the record loaded there refused every
    batch ("tensors are on cpu but earlier ones were on cpu:0"), as `torch.device` compares literally
    (integrations audit: `train(resume_from_checkpoint=...)` under torchrun crashed on both ranks)."""
    _resumed_on("cpu:0", "cpu")
    _resumed_on("cpu", "cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_a_state_loaded_onto_cuda_takes_the_tensors_on_the_current_gpu() -> None:
    """`load_state_dict(device="cuda")` then batches on `cuda:0`: the same comparison as cpu:0."""
    _resumed_on("cuda", f"cuda:{torch.cuda.current_device()}")
