"""SSFT against a two-phase training loop written here from docs/methods.md §1 (spec audit 30).

"Split the training set into halves A and B (stratified, seeded). Train on A (E₁ epochs), then
continue training the same network on B (E₂ epochs, fresh optimizer). For each A-sample record
eval-mode correctness after every B-epoch; its forgetting time = first B-epoch after which it is never
again correct (E₂ if it stays correct). Repeat with A and B swapped. Score = 1 − time/E₂."

The loop below does that with the run's seed, batch order and augmentation draws (global epoch
index across the phases, as `train_run` draws them), a batch-norm model (eval vs train mode differ),
a cosine schedule restarted with the fresh optimizer, and noisy labels; the recorder's traces and the
proxy's scores must match it, and the counterfactuals (the old optimizer's momentum kept, train-mode
correctness) must not.
"""

from __future__ import annotations

import math
from copy import deepcopy

import numpy as np
import pytest
import torch
from sklearn.model_selection import StratifiedKFold
from torch import nn

from harness.datasets import Dataset, load_dataset
from harness.models import build_model
from harness.prepared import PreparedData, prepare
from harness.recipe import Recipe, random_crop_flip
from harness.recorders import RecorderRequest, Records
from harness.runspec import Corruption, DataSpec, RunSpec
from harness.training import augment_generator, batch_order, train_run
from proxies import ScoreContext, make_proxy

CPU = torch.device("cpu")
N, E, BS, SEED, LR = 80, 3, 24, 1, 0.05
RECIPE = Recipe(optimizer="sgd", lr=LR, momentum=0.9, weight_decay=0.0, batch_size=BS, epochs=E,
                schedule="cosine", milestones=(), augment=True, crop_padding=2)
SSFT = RecorderRequest.of("ssft_correct")


def digits16(n: int) -> Dataset:
    """Digits upsampled to 16x16 (each pixel 2x2): big enough for the recipe's crop and flip."""
    d = load_dataset("digits", subset=n)
    up = lambda x: x.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3).contiguous()  # noqa: E731
    return Dataset(name="digits16", x_train=up(d.x_train), y_train=d.y_train, x_test=up(d.x_test[:20]),
                   y_test=d.y_test[:20], classes=d.classes, full_train_size=n)


@pytest.fixture(scope="module")
def data() -> PreparedData:
    return prepare(DataSpec("digits", N, Corruption("noise", 0.1, seed=3)), digits16(N), CPU)


def _epoch(model: nn.Module, opt: torch.optim.Optimizer, data: PreparedData, idx: torch.Tensor, g: int,
           lr: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
    order = batch_order(SEED, g, idx)
    gen = augment_generator(SEED, g, CPU)
    model.train()
    for start in range(0, len(order), BS):
        b = order[start:start + BS]
        loss = nn.functional.cross_entropy(model(data.normalize(random_crop_flip(data.x[b], 2, gen))), data.y[b])
        opt.zero_grad()
        loss.backward()
        opt.step()


def _correct(model: nn.Module, data: PreparedData, idx: np.ndarray, train_mode: bool = False) -> np.ndarray:
    m = deepcopy(model).train(train_mode)
    with torch.no_grad():
        z = m(data.normalize(data.x[torch.as_tensor(idx)])).numpy()
    y = data.labels[idx]
    others = z.copy()
    others[np.arange(len(idx)), y] = -np.inf
    return z[np.arange(len(idx)), y] > others.max(1)


def hand_traces(data: PreparedData, first: np.ndarray, then: np.ndarray, fresh: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
    """(E₂, |A|) eval-mode correctness of A after each B-epoch, and the train-mode one."""
    torch.manual_seed(SEED)
    model = build_model("small_cnn", tuple(data.x.shape[1:]), data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    for e in range(E):
        _epoch(model, opt, data, torch.as_tensor(first), e, LR * (1 + math.cos(math.pi * e / E)) / 2)
    if fresh:
        opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9)
    evals, trains = [], []
    for e in range(E):
        _epoch(model, opt, data, torch.as_tensor(then), E + e, LR * (1 + math.cos(math.pi * e / E)) / 2)
        evals.append(_correct(model, data, first))
        trains.append(_correct(model, data, first, train_mode=True))
    return np.array(evals), np.array(trains)


def forgetting_time(trace: np.ndarray) -> int:
    """The first B-epoch t (0..E₂) after which the sample is never again correct."""
    return next(t for t in range(E + 1) if not trace[t:].any())


@pytest.fixture(scope="module")
def runs(data):
    halves = [np.sort(h) for _, h in StratifiedKFold(2, shuffle=True, random_state=SEED).split(
        np.zeros(N), data.labels)]
    base = RunSpec(data=data.spec, model="small_cnn", recipe=RECIPE, seed=SEED)
    torch.set_num_threads(1)
    specs = make_proxy("ssft").run_specs(base)
    got = {spec: Records(train_run(spec, data, [SSFT], progress=False).arrays) for spec in specs}
    return base, halves, specs, got


def test_ssft_traces_and_scores_match_the_two_phase_loop(data, runs) -> None:
    base, halves, specs, got = runs
    want = np.full(N, np.nan)
    differs = {"momentum": False, "train_mode": False}
    for spec, (a, b) in zip(specs, ((0, 1), (1, 0)), strict=True):
        traces = got[spec].arrays(SSFT.key)["correct"]
        assert traces.shape == (E, N)
        first = halves[a]
        assert np.array_equal(np.flatnonzero(~np.isnan(traces).all(axis=0)), first)  # A's columns only
        evals, trains = hand_traces(data, first, halves[b])
        np.testing.assert_array_equal(traces[:, first], evals)
        kept, _ = hand_traces(data, first, halves[b], fresh=False)
        differs["momentum"] |= not np.array_equal(kept, evals)
        differs["train_mode"] |= not np.array_equal(trains, evals)
        want[first] = [1 - forgetting_time(evals[:, j]) / E for j in range(len(first))]
    assert all(differs.values()), differs  # the checks above could fail
    ctx = ScoreContext(base=base, labels=data.labels, num_classes=data.num_classes, runs=got)
    score = make_proxy("ssft").score(ctx)
    np.testing.assert_array_equal(score, want)
    assert len(np.unique(score)) > 1


def test_forgetting_time_reads_the_spec_sentence() -> None:
    """Traces of E₂ = 3 B-epochs, the time by the loop above, the proxy's score 1 − time/E₂."""
    from proxies.ssft import forgetting_times, ssft_scores

    traces = np.array([[1, 1, 1], [1, 1, 0], [1, 0, 0], [0, 0, 0], [0, 1, 0], [0, 0, 1], [1, 0, 1]], float).T
    times = [forgetting_time(t.astype(bool)) for t in traces.T]
    assert times == [3, 2, 1, 0, 2, 3, 3]  # E₂ when it stays correct; 0 when lost at the first B-epoch
    np.testing.assert_array_equal(forgetting_times(traces), times)
    np.testing.assert_allclose(ssft_scores(forgetting_times(traces), E), 1 - np.array(times) / E)
