"""Cost honesty: every second and FLOP memprox reports is the measured work's own.

- Seconds of a recorder never include torch's FLOP counter: its first call is counted on an
  execution of its own and timed on another (`harness.timing.Meter`), so a recorder called once (the
  final eval pass behind final_loss, any checkpoint recorder of a one-epoch run) no longer reads
  3-4x high. Timing is noisy on a shared box: the tests make the counter's overhead a known sleep
  and assert structure (which execution is timed, which counted), never wall-time ratios.
- FLOPs of the training step and of every recorder of the digits MLP equal a hand count exactly:
  2·in·out per linear layer and sample forward (torch's counter counts matmuls only: bias additions
  and element-wise work are 0), a training step's backward 2·in·out per layer for the weight
  gradient plus 2·in·out for the input gradient of every layer but the first, an input gradient's
  backward 2·in·out per layer (no weight gradients).
- A proxy is charged its runs' training, the recorders it declares (a recorder shared by proxies in
  full to each: the cost it would have alone) and its `score`; a run reused from the store is
  charged its manifest's costs, neither 0 nor twice.
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import harness.timing as timing
from harness.experiment import Experiment
from harness.models import build_model
from harness.prepared import PreparedData
from harness.recorders import EVAL_LAST, RECORDERS, Recorder, RecorderBank, RecorderRequest, RunContext, build_recorder
from harness.runspec import TrainSubset
from harness.timing import Meter
from harness.training import train_run

CPU = torch.device("cpu")
IN, HIDDEN, CLASSES = 64, 256, 10  # the digits MLP: 64 -> 256 -> 256 -> 10
FORWARD = 2 * (IN * HIDDEN + HIDDEN * HIDDEN + HIDDEN * CLASSES)  # FLOPs per sample, forward
INPUT_GRAD = 2 * FORWARD  # forward + input-gradient backward (every layer, no weight gradients)
TRAIN_STEP = FORWARD + FORWARD + (FORWARD - 2 * IN * HIDDEN)  # + weight grads + input grads but the first layer's

COUNTING: list[bool] = [False]  # whether the FLOP counter runs now (set by the patched count_flops)


@pytest.fixture
def counter_overhead(monkeypatch) -> Iterator[float]:
    """The Meter's FLOP counter made to cost a known 0.8 s and to say when it is running."""
    overhead = 0.8
    monkeypatch.setattr(timing, "count_flops", _flagging(timing.count_flops, overhead))
    yield overhead


class _Sleeper(Recorder):
    """A checkpoint recorder that sleeps 0.2 s, 0.6 s while counted, and notes each execution."""

    name = "test_cost7_sleeper"
    repeatable = True

    def __init__(self, ctx: RunContext) -> None:
        super().__init__(ctx)
        self.executions: list[bool] = []

    def on_epoch_end(self, epoch, phase, model) -> None:
        self.executions.append(COUNTING[0])
        time.sleep(0.6 if COUNTING[0] else 0.2)


class _Counter(_Sleeper):
    """The same, not repeatable (it counts its calls): each call must run exactly once."""

    name = "test_cost7_counter"
    repeatable = False


def _bank(*recorders: Recorder) -> RecorderBank:
    ctx = RunContext(None, 3, None, 2, CPU, samples=4, classes=2)  # type: ignore[arg-type]
    bank = RecorderBank(ctx)
    for rec in recorders:
        bank.add(rec.name, rec)
    return bank


def test_a_recorder_called_once_is_timed_on_an_execution_the_counter_does_not_see(monkeypatch) -> None:
    """It used to be timed on its counted call: 0.6 s here, the counter's overhead read as its own."""
    monkeypatch.setattr(timing, "count_flops", _flagging(timing.count_flops))
    rec = _Sleeper(RunContext(None, 3, None, 2, CPU, samples=4, classes=2))  # type: ignore[arg-type]
    bank = _bank(rec)
    bank.on_epoch_end(2, 1, None)
    assert rec.executions == [True, False]  # counted, then timed
    assert 0.2 <= bank.seconds()[rec.name] < 0.4


def test_a_recorder_that_is_not_repeatable_runs_once_per_call_and_every_call_is_billed(monkeypatch) -> None:
    """Not repeatable: its first call is the counted one (its seconds then include the counter, the
    only measurement there is), and calls before the first timed one are billed at that call's rate
    (they were billed nothing: three calls cost one call's seconds)."""
    monkeypatch.setattr(timing, "count_flops", _flagging(timing.count_flops))
    rec = _Counter(RunContext(None, 3, None, 2, CPU, samples=4, classes=2))  # type: ignore[arg-type]
    meter = Meter(CPU, sample_every=16)
    for epoch in range(3):
        meter.run(lambda e=epoch: rec.on_epoch_end(e, 1, None))  # a lambda declares nothing
    assert rec.executions == [True, False, False]
    assert 3 * 0.6 <= meter.seconds() < 3 * 0.6 + 0.5
    assert meter.clock_seconds() == pytest.approx(meter.seconds())


def test_the_bank_passes_each_recorders_declaration_to_its_meter(monkeypatch) -> None:
    """`RecorderBank` tells the Meter what `Recorder.repeatable` says: the repeatable recorder runs
    counted then timed, the other once."""
    monkeypatch.setattr(timing, "count_flops", _flagging(timing.count_flops))
    ctx = RunContext(None, 3, None, 2, CPU, samples=4, classes=2)  # type: ignore[arg-type]
    once, counted = _Sleeper(ctx), _Counter(ctx)
    bank = _bank(once, counted)
    bank.on_epoch_end(0, 1, None)
    assert once.executions == [True, False] and counted.executions == [True]


def test_per_batch_clock_time_covers_the_extra_execution(monkeypatch) -> None:
    """A repeatable recorder in the training loop's clock: the clock lost the counted execution and
    every call's own time, and the recorder is billed every call at its timed rate."""
    monkeypatch.setattr(timing, "count_flops", _flagging(timing.count_flops))
    meter = Meter(CPU, sample_every=16)
    for _ in range(3):
        meter.run(lambda: time.sleep(0.3 if COUNTING[0] else 0.1), repeatable=True)
    assert 0.3 <= meter.seconds() < 0.5
    assert meter.clock_seconds() == pytest.approx(meter.first.seconds() + meter.seconds())
    restored = Meter(CPU)
    restored.load(meter.state())
    assert restored.clock_seconds() == pytest.approx(meter.clock_seconds())


def _flagging(real, overhead: float = 0.0):
    """`real` (torch's counter) that sets COUNTING while it runs and then costs `overhead` seconds."""
    @contextmanager
    def count_flops(sink: list[int]) -> Iterator[None]:
        COUNTING[0] = True
        try:
            with real(sink):
                yield
            time.sleep(overhead)
        finally:
            COUNTING[0] = False

    return count_flops


def test_one_call_recorders_of_a_run_are_billed_without_the_counter(base_spec, digits_noisy, counter_overhead) -> None:
    """A one-epoch run: the final eval pass, input gradients and curvature are each called once; with
    the counter costing 0.8 s, each was billed >= 0.8 s (final_loss 3-4x high on the digits MLP at
    few epochs, above csl_eval's two passes). Their FLOPs are still counted."""
    spec = replace(base_spec, recipe=replace(base_spec.recipe, epochs=1))
    requests = [EVAL_LAST, RecorderRequest.of("input_grads"), RecorderRequest.of("curvature", n=1)]
    out = train_run(spec, digits_noisy, requests, progress=False)
    n = digits_noisy.n
    assert out.recorder_flops == {EVAL_LAST.key: FORWARD * n, "input_grads": INPUT_GRAD * n,
                                  requests[2].key: 2 * INPUT_GRAD * n}
    for key, seconds in out.recorder_seconds.items():
        assert 0 < seconds < counter_overhead, key
    assert out.train_seconds < 2 * counter_overhead  # nothing of it lands on the training clock


REPEATABLE = [RecorderRequest.of(n) for n in ("train_loss", "train_correct", "train_margin", "train_prob")] + [
    EVAL_LAST, RecorderRequest.of("eval_pass", epochs="all"), RecorderRequest.of("input_grads"),
    RecorderRequest.of("input_grads", every=2), RecorderRequest.of("curvature", n=2, every=1),
    RecorderRequest.of("ssft_correct"),
]


def test_every_harness_recorder_declaring_repeatable_is_tested_here() -> None:
    declared = {name for name, cls in RECORDERS.items()
                if cls.__module__.startswith("harness.recorders") and getattr(cls, "repeatable", False)}
    assert declared == {r.name for r in REPEATABLE}


@pytest.mark.parametrize("request_", REPEATABLE, ids=lambda r: r.key)
def test_a_repeatable_recorder_called_twice_leaves_what_one_call_leaves(request_, digits_noisy: PreparedData) -> None:
    """The Meter runs a repeatable recorder's first call twice (counted, then timed): the second run
    must not change a single stored value (no accumulation, draws seeded by run and epoch)."""
    torch.manual_seed(0)
    model = build_model("mlp", tuple(digits_noisy.x.shape[1:]), digits_noisy.num_classes)
    half = torch.arange(0, digits_noisy.n, 2)
    ctx = RunContext(digits_noisy, 2, half, 64, CPU, seed=3)
    idx = half[:50]
    logits = model(digits_noisy.inputs(idx)).detach()
    labels = digits_noisy.y[idx]
    loss = torch.nn.functional.cross_entropy(logits, labels, reduction="none")
    phase = 2 if request_.name == "ssft_correct" else 1

    def record(times: int) -> dict[str, np.ndarray]:
        rec = build_recorder(request_, ctx)
        for _ in range(times):
            if rec.on_batches:
                rec.on_batch(1, idx, logits, loss, labels)
            else:
                rec.on_epoch_end(1, phase, model)
        return rec.arrays()

    once, twice = record(1), record(2)
    assert once.keys() == twice.keys()
    assert any(np.isfinite(a).any() for a in once.values())
    for name, value in once.items():
        np.testing.assert_array_equal(twice[name], value, err_msg=name)


def test_flops_of_training_and_every_recorder_equal_the_hand_count(base_spec, digits_noisy) -> None:
    """Exact, for a 2-epoch run: curvature's FLOPs are (n + 1) input gradients (2(n + 1) passes,
    methods.md) per scored epoch; training-pass recorders add 0; `every` skips epochs."""
    spec = replace(base_spec, recipe=replace(base_spec.recipe, epochs=2))
    training_pass = [RecorderRequest.of(n) for n in ("train_loss", "train_correct", "train_margin", "train_prob")]
    others = {
        EVAL_LAST: FORWARD,
        RecorderRequest.of("eval_pass", epochs="all"): 2 * FORWARD,
        RecorderRequest.of("input_grads"): 2 * INPUT_GRAD,
        RecorderRequest.of("input_grads", every=2): INPUT_GRAD,
        RecorderRequest.of("curvature", n=1, every=2): (1 + 1) * INPUT_GRAD,
        RecorderRequest.of("curvature", n=3): 2 * (3 + 1) * INPUT_GRAD,
    }
    out = train_run(spec, digits_noisy, training_pass + list(others), progress=False)
    n = digits_noisy.n
    assert out.train_flops == TRAIN_STEP * n * 2
    assert out.recorder_flops == {**{r.key: 0 for r in training_pass}, **{r.key: f * n for r, f in others.items()}}


def test_ssft_correct_flops_are_one_forward_of_the_first_split_per_second_phase_epoch(base_spec, digits_noisy) -> None:
    a, b = (TrainSubset(kind="half", index=i, count=2, seed=0) for i in (0, 1))
    spec = replace(base_spec, recipe=replace(base_spec.recipe, epochs=2)).with_subset(train_on=a, then_on=b)
    out = train_run(spec, digits_noisy, [RecorderRequest.of("ssft_correct")], progress=False)
    first = int(np.isfinite(out.arrays["ssft_correct"]["correct"][0]).sum())
    second = digits_noisy.n - first
    assert out.recorder_flops == {"ssft_correct": 2 * FORWARD * first}
    assert out.train_flops == TRAIN_STEP * 2 * (first + second)


def _manifest_cost(store: Path, spec_hashes: dict[str, list[str]]) -> dict[str, tuple[float, float]]:
    """Per proxy: (FLOPs, seconds) recomputed from the stored manifests of the runs and recorders named."""
    manifests = {p.parent.name: json.loads(p.read_text()) for p in (store / "runs").glob("*/manifest.json")}
    (base,) = manifests.values()
    out = {}
    for proxy, keys in spec_hashes.items():
        flops = base["train_flops"] + sum(base["recorders"][k]["flops"] for k in keys)
        seconds = base["train_seconds"] + sum(base["recorders"][k]["seconds"] for k in keys)
        out[proxy] = (flops, seconds)
    return out


def _cost(result) -> dict[str, dict[str, float]]:
    raw = result.raw[result.raw.task == "cost"]
    return {p: dict(zip(g.metric, g.value, strict=True)) for p, g in raw.groupby("proxy")}


def test_cost_rows_are_the_manifests_costs_fresh_and_reused(make_config) -> None:
    """One base run with every recorder; each proxy charged training + its own recorders (input
    gradients in full to each of learning_time and csg), + its score's seconds; the same FLOPs when
    the run is reused from the store, and seconds that are again the manifest's (not 0, not doubled)."""
    cfg = make_config(tasks=("cost",), epochs=2, proxies="csl,forgetting,final_loss,learning_time,csg,curvature(n=1)")
    first = _cost(Experiment(cfg).run())
    curvature = "curvature[every=1,h=0.001,n=1]"
    expected = _manifest_cost(cfg.store, {"csl": ["train_loss"], "forgetting": ["train_correct"],
                                          "final_loss": [EVAL_LAST.key], "learning_time": ["input_grads"],
                                          "csg": ["input_grads"], "curvature(n=1)": [curvature]})
    again = _cost(Experiment(replace(cfg, overwrite=True)).run())
    train_flops = expected["csl"][0]
    for proxy, (flops, seconds) in expected.items():
        for rows in (first, again):
            assert rows[proxy]["flops"] == flops, proxy
            assert seconds < rows[proxy]["seconds"] < seconds + 0.5, proxy  # + its score's seconds (> 0)
    assert first["csl"]["flops_rel"] == first["forgetting"]["flops_rel"] == 1.0
    assert first["learning_time"]["flops"] == first["csg"]["flops"] > train_flops


def test_ensemble_members_are_charged_the_hand_counted_flops(base_spec, digits_noisy) -> None:
    """The batched engine counts one plain member's step and a K-member eval pass split K ways: each
    member's FLOPs are a plain run's."""
    from harness.ensemble import train_ensemble

    spec = replace(base_spec, recipe=replace(base_spec.recipe, epochs=1))
    specs = [replace(spec, seed=s) for s in (0, 1)]
    outs = train_ensemble(specs, digits_noisy, [EVAL_LAST], progress=False)
    n = digits_noisy.n
    for out in outs:
        assert not isinstance(out, Exception)
        assert out.train_flops == TRAIN_STEP * n
        assert out.recorder_flops == {EVAL_LAST.key: FORWARD * n}


def test_count_then_time_times_an_execution_the_counter_does_not_see(monkeypatch) -> None:
    """For a pass timed as a whole (the batched ensemble's eval pass): FLOPs of one execution,
    seconds of another."""
    monkeypatch.setattr(timing, "count_flops", _flagging(timing.count_flops))
    seen: list[bool] = []

    def work() -> None:
        seen.append(COUNTING[0])
        torch.ones(8, 16) @ torch.ones(16, 4)
        time.sleep(0.6 if COUNTING[0] else 0.2)

    flops, seconds = timing.count_then_time(work, CPU)
    assert seen == [True, False]
    assert flops == 2 * 8 * 16 * 4
    assert 0.2 <= seconds < 0.4


def test_a_manifest_without_its_meter_reads_as_the_older_way_and_new_ones_as_this_one() -> None:
    """Stored runs keep the seconds of the memprox that trained them: the manifest says how they
    were measured (a field added with the Meter change; absent = measured with the counter)."""
    from harness.manifest import METER_VERSION, Manifest

    fresh = Manifest(spec={}, spec_hash="h", label="l", engine="single", device="cpu", threads=1, train_seconds=1.0,
                     train_flops=1, train_acc=1.0, test_acc=1.0, recorders={})
    assert fresh.meter == METER_VERSION == 2
    assert Manifest.from_json(fresh.to_json()).meter == 2
    raw = json.loads(fresh.to_json())
    del raw["meter"], raw["manifest_sha256"]
    assert Manifest.from_dict(raw).meter == 1


def test_the_cost_task_warns_when_runs_were_timed_the_older_way() -> None:
    from harness.tasks.cost import warn_older_meters

    with pytest.warns(UserWarning, match=r"cost: 1 of the 2 runs read were stored by a memprox before 2 December"):
        warn_older_meters([1, 2])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        warn_older_meters([2, 2])


def test_the_ensembles_eval_pass_is_billed_without_the_counter(base_spec, digits_noisy, counter_overhead,
                                                               monkeypatch) -> None:
    """The batched engine timed its final eval pass together with its FLOP count: with one member
    (`--proxies final_loss` alone) the pass read 0.35 s where 0.10 s is its own. A counter made to
    cost 0.8 s must not reach the members' eval seconds; the FLOPs stay a plain pass's."""
    from harness.ensemble import train_ensemble

    monkeypatch.setattr("harness.ensemble.count_flops", timing.count_flops, raising=False)  # where it was imported
    spec = replace(base_spec, recipe=replace(base_spec.recipe, epochs=1))
    outs = train_ensemble([spec], digits_noisy, [EVAL_LAST], progress=False)
    (out,) = outs
    assert not isinstance(out, Exception)
    assert out.recorder_seconds[EVAL_LAST.key] < counter_overhead
    assert out.recorder_flops == {EVAL_LAST.key: FORWARD * digits_noisy.n}
