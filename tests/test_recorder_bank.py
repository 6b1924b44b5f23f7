"""The recorder bank: the one storage of per-sample signals, used by `train_run`, by the batched
ensemble and by `SampleTracker`; checked against signals computed by hand, and for the module
sizes and import graph the refactor promised (issue 18, item 3)."""

from __future__ import annotations

import ast
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from baselines.stability import stability_specs
from harness import SampleTracker
from harness.ensemble import train_ensemble
from harness.models import build_model
from harness.recorders import EVAL_LAST, RecorderBank, RecorderRequest, RunContext
from harness.recorders.base import GrowingRows
from harness.recorders.eval_pass import EvalPass, eval_signals
from harness.recorders.train_pass import RunningLossSum
from harness.training import batch_order, train_run

REPO = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


class _Data:
    """The parts of PreparedData the bank's context reads."""

    def __init__(self, n: int, classes: int) -> None:
        self.n, self.num_classes = n, classes


def _bank(requests, n=6, epochs=2, classes=3) -> RecorderBank:
    ctx = RunContext(_Data(n, classes), epochs, torch.arange(n), 2, CPU)  # type: ignore[arg-type]
    return RecorderBank(ctx, [RecorderRequest.of(r) if isinstance(r, str) else r for r in requests])


def test_training_pass_rows_are_the_batches_signals() -> None:
    """Each epoch's row holds every presented sample's value from its batch; others stay NaN."""
    bank = _bank(["train_loss", "train_correct", "train_margin"])
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 3.0, 1.0], [1.0, 1.0, 4.0]])
    labels = torch.tensor([0, 2, 1])
    loss = nn.functional.cross_entropy(logits, labels, reduction="none")
    bank.on_batch(1, torch.tensor([4, 0, 2]), logits, loss, labels)
    arrays = bank.arrays()
    assert set(arrays) == {"train_loss", "train_correct", "train_margin"}
    row = arrays["train_loss"]["loss"]
    assert row.shape == (2, 6) and row.dtype == np.float32 and np.isnan(row[0]).all()
    np.testing.assert_array_equal(row[1, [4, 0, 2]], loss.numpy())
    assert np.isnan(row[1, [1, 3, 5]]).all()
    np.testing.assert_array_equal(arrays["train_correct"]["correct"][1, [4, 0, 2]], [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(arrays["train_margin"]["margin"][1, [4, 0, 2]], [2.0, -2.0, -3.0])


def test_train_run_loss_rows_match_a_hand_computed_epoch(base_spec, digits_noisy) -> None:
    """With a zero learning rate the model stays at its initialisation, so every epoch's
    train_loss row is that model's per-sample cross entropy, computed here in one pass."""
    spec = replace(base_spec, recipe=replace(base_spec.recipe, lr=0.0, momentum=0.0, epochs=2))
    out = train_run(spec, digits_noisy, [RecorderRequest.of("train_loss")], progress=False)
    torch.manual_seed(spec.seed)
    model = build_model(spec.model, tuple(digits_noisy.x.shape[1:]), digits_noisy.num_classes)
    x = digits_noisy.inputs(torch.arange(digits_noisy.n))
    with torch.no_grad():
        expected = nn.functional.cross_entropy(model(x), digits_noisy.y, reduction="none").numpy()
    rows = out.arrays["train_loss"]["loss"]
    assert rows.shape == (2, digits_noisy.n)
    for epoch in range(2):
        np.testing.assert_allclose(rows[epoch], expected, rtol=1e-5, atol=1e-6)
    # the batch order really differs between epochs, so the rows are not one batch copied twice
    order = [batch_order(spec.seed, e, torch.arange(digits_noisy.n)) for e in range(2)]
    assert not torch.equal(order[0], order[1])


def test_growing_rows_and_fed_eval_pass() -> None:
    """An open-ended context (a user's loop): per-epoch rows grow; a fed eval pass replaces what an
    earlier pass wrote into its row."""
    ctx = RunContext(None, None, None, 0, CPU, samples=4, classes=3)
    bank = RecorderBank(ctx, [RecorderRequest.of("train_loss"), RecorderRequest.of("eval_pass", epochs="all")],
                        timed=False)
    assert isinstance(bank["train_loss"].buffers["loss"], GrowingRows)
    bank.on_batch(2, torch.tensor([1]), None, torch.tensor([0.5]), None)
    logits, labels = torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 5.0]]), torch.tensor([1, 0])
    for scale in (3.0, 1.0):  # the second pass after epoch 0 replaces the first
        bank.on_eval_start(0)
        bank.on_eval_batch(0, torch.tensor([0, 3]) if scale == 3.0 else torch.tensor([0, 2]),
                           eval_signals(logits * scale, labels))
    arrays = bank.arrays(rows=3)
    loss = arrays["train_loss"]["loss"]
    assert loss.shape == (3, 4) and loss[2, 1] == 0.5 and np.isnan(np.delete(loss.ravel(), 9)).all()
    ev = arrays["eval_pass[epochs=all]"]
    expected = eval_signals(logits, labels)
    assert ev["loss"].shape == (3, 4) and np.isnan(ev["loss"][0, [1, 3]]).all()
    np.testing.assert_array_equal(ev["loss"][0, [0, 2]], expected["loss"].numpy())
    np.testing.assert_array_equal(ev["probs_last"][[0, 2]], expected["probs"].numpy())
    assert np.isnan(ev["probs_last"][[1, 3]]).all()


def test_running_loss_sum() -> None:
    ctx = RunContext(None, None, None, 0, CPU, samples=3)
    bank = RecorderBank(ctx, timed=False)
    bank.add("train_loss", RunningLossSum(ctx))
    for epoch, (idx, loss) in enumerate([([0, 1], [1.0, 2.0]), ([1, 2], [0.25, float("nan")])]):
        bank.on_batch(epoch, torch.tensor(idx), None, torch.tensor(loss), None)
        bank.on_epoch_end(epoch, 1, None)
    (row,) = bank.arrays()["train_loss"]["loss"]
    assert row.dtype == np.float64
    np.testing.assert_array_equal(row, [1.0, 2.25, 0.0])


class _Calls:
    """Counts the bank's feeding calls, by method, while the real ones run."""

    def __init__(self, monkeypatch) -> None:
        self.counts: dict[str, int] = {}
        for method in ("on_batch", "on_epoch_end", "on_eval_batch", "arrays"):
            real = getattr(RecorderBank, method)

            def counting(bank, *args, _real=real, _name=method, **kwargs):
                self.counts[_name] = self.counts.get(_name, 0) + 1
                return _real(bank, *args, **kwargs)

            monkeypatch.setattr(RecorderBank, method, counting)
        self.fed_eval = 0
        real_eval = EvalPass.on_eval_batch

        def eval_batch(rec, *args, **kwargs):
            self.fed_eval += 1
            return real_eval(rec, *args, **kwargs)

        monkeypatch.setattr(EvalPass, "on_eval_batch", eval_batch)


def test_train_run_records_through_the_bank(base_spec, digits_noisy, monkeypatch) -> None:
    calls = _Calls(monkeypatch)
    spec = replace(base_spec, recipe=replace(base_spec.recipe, epochs=2))
    out = train_run(spec, digits_noisy, [RecorderRequest.of("train_loss"), EVAL_LAST], progress=False)
    batches = -(-digits_noisy.n // spec.recipe.batch_size)
    assert calls.counts["on_batch"] == 2 * batches and calls.counts["on_epoch_end"] == 2
    # its own pass, at the end, executed twice: once under the FLOP counter, once timed (`Recorder.repeatable`)
    assert calls.fed_eval == 2 * -(-digits_noisy.n // (4 * spec.recipe.batch_size))
    assert set(out.arrays) == {"train_loss", EVAL_LAST.key}


def test_the_ensemble_records_through_member_banks(base_spec, digits_noisy, monkeypatch) -> None:
    calls = _Calls(monkeypatch)
    specs = stability_specs(replace(base_spec, recipe=replace(base_spec.recipe, epochs=1)), 3, 0.7)
    outs = train_ensemble(specs, digits_noisy, [EVAL_LAST], progress=False)
    eval_batches = calls.counts["on_eval_batch"] // 3
    assert eval_batches >= 1 and calls.counts["on_eval_batch"] == 3 * eval_batches == calls.fed_eval
    assert calls.counts["arrays"] == 3 and "on_batch" not in calls.counts  # the training pass records nothing
    for out in outs:
        arrays = out.arrays[EVAL_LAST.key]
        assert arrays["loss"].shape == (1, digits_noisy.n) and not np.isnan(arrays["loss"]).any()


def test_the_tracker_records_through_its_bank(monkeypatch) -> None:
    calls = _Calls(monkeypatch)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    x, y = torch.randn(10, 4), torch.randint(0, 3, (10,))
    tracker = SampleTracker(10)
    for _ in range(2):
        for start in (0, 5):
            idx = torch.arange(start, start + 5)
            logits = model(x[idx])
            tracker.update(idx, losses=nn.functional.cross_entropy(logits, y[idx], reduction="none"),
                           logits=logits, labels=y[idx])
        tracker.end_epoch()
        tracker.eval_epoch(model, (x, y), batch_size=4)
    table = tracker.scores()
    # each epoch's two batches are held and recorded as one at end_epoch (harness.tracker.batch_log)
    assert calls.counts["on_batch"] == 2 and calls.counts["on_epoch_end"] == 2
    assert calls.counts["on_eval_batch"] == calls.fed_eval == 2 * 3 and calls.counts["arrays"] == 1
    with torch.no_grad():
        final = nn.functional.cross_entropy(model(x), y, reduction="none").numpy()
    np.testing.assert_allclose(table["final_loss"], final, rtol=1e-6)


def test_stored_runs_and_records_offer_run_arrays() -> None:
    """Proxies read runs through the RunArrays protocol and do not import the run store."""
    code = "import sys, proxies.base; assert 'harness.store' not in sys.modules, 'proxies import the store'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)
    from harness.store import StoredRun

    assert list(StoredRun.arrays.__annotations__) == ["recorder_key", "return"]


# -- sizes and imports of the modules the bank touches --------------------------------------------

OWNED = [REPO / "harness" / name for name in ("training.py", "ensemble.py", "ensemble_stack.py")]
OWNED += sorted((REPO / "harness" / "recorders").glob("*.py")) + sorted((REPO / "harness" / "tracker").glob("*.py"))
#: SampleTracker is the public API of a user's loop: its length is the documented calls' checks and
#: docstrings; the work is in harness.tracker's other modules.
LONG_CLASSES = {"SampleTracker"}


@pytest.mark.parametrize("path", OWNED, ids=lambda p: str(p.relative_to(REPO)))
def test_module_and_class_sizes(path: Path) -> None:
    source = path.read_text()
    assert len(source.splitlines()) <= 400
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name not in LONG_CLASSES:
            assert node.end_lineno - node.lineno + 1 <= 150, node.name


def _module_imports(path: Path) -> set[str]:
    """Modules imported at module level (what runs at import time)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return found


def test_no_import_cycle_through_the_recorders_engines_tracker_or_proxies() -> None:
    """No module the bank touches (recorders, training, ensemble, tracker, proxies) is on an import
    cycle: strongly connected components of the module-level import graph of harness, proxies and
    baselines (other cycles, e.g. models <-> text_models, belong to their own modules)."""
    files = {}
    for package in ("harness", "proxies", "baselines"):
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {m: {i for i in _module_imports(p) if i in files and i != m} for m, p in files.items()}
    reach = {m: set() for m in graph}  # modules reachable from m
    for m in graph:
        todo = list(graph[m])
        while todo:
            n = todo.pop()
            if n not in reach[m]:
                reach[m].add(n)
                todo.extend(graph[n])
    watched = [m for m in graph if m.startswith(("harness.recorders", "harness.tracker", "harness.training",
                                                  "harness.ensemble", "proxies"))]
    assert "harness.recorders.bank" in watched and "harness.tracker.core" in watched
    on_cycles = {m: sorted(n for n in reach[m] if m in reach[n]) for m in watched}
    assert not any(on_cycles.values()), {m: c for m, c in on_cycles.items() if c}
