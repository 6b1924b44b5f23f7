"""Confident learning's fold models against a loop written here from docs/methods.md §1 (spec audit 30).

"Out-of-fold predicted probabilities from K = 3 stratified folds, each fold model trained from
scratch on the other folds with the base recipe, scored in eval mode on its held-out fold." The
experiment below trains the fold runs as the planner chooses (on a CPU an MLP on part of the data
trains in the batched ensemble); the loop here trains each fold model alone, from the run's seed,
on the other folds, in the run's batch order, and its probabilities must be the stored ones. The
model trained on every sample (what the released code's reused network amounts to) gives other
probabilities on the held-out fold, so the check can fail. The score is then cleanlab's flag +
(1 − self-confidence) on the loop's probabilities.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from cleanlab.filter import find_label_issues
from sklearn.model_selection import StratifiedKFold
from torch import nn

from harness.api import run_experiment
from harness.datasets import load_dataset
from harness.models import build_model
from harness.prepared import prepare
from harness.runspec import Corruption, DataSpec
from harness.training import batch_order

N, E, BS, SEED, RATE, LR, K = 150, 3, 32, 2, 0.1, 0.1, 3


def _hand_fold_model(x: torch.Tensor, y: torch.Tensor, train_idx: np.ndarray) -> np.ndarray:
    """The quick digits recipe (SGD 0.1, momentum 0.9, cosine over E epochs) on `train_idx` from a
    fresh model seeded with the run's seed; (N, C) softmax of every sample, eval mode."""
    torch.manual_seed(SEED)
    model = build_model("mlp", tuple(x.shape[1:]), 10)
    opt = torch.optim.SGD(model.parameters(), lr=LR, momentum=0.9, weight_decay=0.0)
    for e in range(E):
        for group in opt.param_groups:
            group["lr"] = LR * (1 + math.cos(math.pi * e / E)) / 2
        order = batch_order(SEED, e, torch.as_tensor(train_idx))
        model.train()
        for start in range(0, len(order), BS):
            b = order[start:start + BS]
            loss = nn.functional.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        return torch.softmax(model(x).double(), 1).numpy()


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory):
    store = tmp_path_factory.mktemp("folds30") / "store"
    torch.set_num_threads(1)
    result = run_experiment(dataset="digits", subset=N, epochs=E, batch_size=BS, seeds=[SEED],
                            proxies="confident_learning", tasks=["mislabeled"], noise_rates=[RATE], bootstrap=0,
                            store=str(store), out=None, executor="inprocess", progress=False, device="cpu")
    runs = {json.loads((d / "manifest.json").read_text())["label"]: d for d in (store / "runs").iterdir()}
    return result, runs


def test_fold_models_are_trained_from_scratch_on_the_other_folds(experiment) -> None:
    result, runs = experiment
    (table,) = result.scores.values()
    data = prepare(DataSpec("digits", N, Corruption("noise", RATE, seed=SEED)), load_dataset("digits", subset=N),
                   torch.device("cpu"))
    labels = table["label"].to_numpy()
    assert np.array_equal(labels, data.labels)
    x = data.inputs(torch.arange(N))
    folds = [np.sort(f) for _, f in StratifiedKFold(K, shuffle=True, random_state=SEED).split(np.zeros(N), labels)]
    pred = np.full((N, 10), np.nan)
    everything = _hand_fold_model(x, data.y, np.arange(N))
    for k, held in enumerate(folds):
        stored = np.load(runs[f"digits noise={RATE} mlp seed{SEED} on=fold{k}/{K}@{SEED}"]
                         / "eval_pass[epochs=last].probs_last.npy")
        mine = _hand_fold_model(x, data.y, np.setdiff1d(np.arange(N), held))
        np.testing.assert_allclose(stored, mine, rtol=1e-4, atol=1e-6, err_msg=f"fold {k}")
        assert np.abs(everything[held] - mine[held]).max() > 0.05  # a model that saw the fold predicts otherwise
        pred[held] = mine[held]
    flags = find_label_issues(labels, pred, filter_by="confident_learning", n_jobs=1)
    want = flags + 1 - pred[np.arange(N), labels]
    np.testing.assert_allclose(table["confident_learning"].to_numpy(), want, rtol=1e-4, atol=1e-6)
    assert flags.any() and not flags.all()
