"""Numerical audit (round 20): a real digits experiment, every number recomputed from the store.

One small experiment (all proxies, mislabeled and memorization, two seeds) is run through the Python
API. Then, from the stored per-epoch arrays alone (read as .npy files, no proxy or metric helper of
memprox), every proxy is recomputed with plain loops written from methods.md, the stability
reference from the K runs, the detection and similarity metrics from scikit-learn / scipy or by
hand, and the leaderboard's mean, std and seed count from those per-seed values. The pieces have
hand-made tests of their own; this is the check that they are wired together as the spec says
(which run, which recorder row, which labels, which samples).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score
from sklearn.model_selection import StratifiedKFold

from harness.api import run_experiment

N, E, K, SEEDS, RATE = 150, 4, 6, (0, 1), 0.1


@pytest.fixture(scope="module")
def experiment(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict[str, Path]]:
    store = tmp_path_factory.mktemp("audit20") / "store"
    result = run_experiment(dataset="digits", subset=N, epochs=E, seeds=list(SEEDS), proxies="all",
                            tasks=["mislabeled", "memorization"], noise_rates=[RATE], bootstrap=0,
                            task_args={"memorization": {"k": K}}, store=str(store), out=None,
                            executor="inprocess", progress=False, device="cpu")
    runs = {json.loads((d / "manifest.json").read_text())["label"]: d for d in (store / "runs").iterdir()}
    return result, runs


def _read(runs: dict[str, Path], label: str, key: str) -> np.ndarray:
    return np.load(runs[label] / f"{key}.npy").astype(np.float64)


def _proxies_by_hand(runs: dict[str, Path], base: str, labels: np.ndarray, seed: int) -> dict[str, np.ndarray]:
    """Every proxy of `--proxies all` from methods.md §1, one sample at a time."""
    loss, correct = _read(runs, base, "train_loss.loss"), _read(runs, base, "train_correct.correct")
    margin, p_label = _read(runs, base, "train_margin.margin"), _read(runs, base, "train_prob.p_label")
    el2n, eval_loss = _read(runs, base, "train_prob.el2n"), _read(runs, base, "eval_pass[epochs=all].loss")
    last = {k: _read(runs, base, f"eval_pass[epochs=last].{k}")[0] for k in ("loss", "phi")}
    probs = _read(runs, base, "eval_pass[epochs=last].probs_last")
    grads = {k: _read(runs, base, f"input_grads.{k}") for k in ("l1", "l2", "sq")}
    curvature = _read(runs, base, "curvature[every=1,h=0.001,n=10].curvature")
    out: dict[str, list[float]] = {}
    running = np.array([[grads["sq"][:t + 1, i].mean() for i in range(N)] for t in range(E)])  # m_T, T = 1..E
    tau = running.mean()
    window = max(1, math.floor(0.1 * E + 0.5))
    for i in range(N):
        c = correct[:, i]
        first_correct = next((t for t in range(E) if c[t] == 1), None)
        first_below = next((t + 1 for t in range(E) if running[t, i] <= tau), None)
        tail = 1 / (1 + math.exp(last["phi"][i]))  # 1 - p_label, exact from phi where float32 rounds it
        row = {
            "csl": math.fsum(loss[:, i]),
            "csl_eval": math.fsum(eval_loss[:, i]),
            "final_loss": -math.log(1 - tail) if last["loss"][i] < 1e-3 else last["loss"][i],
            "in_confidence": tail if 1 - probs[i, labels[i]] < 1e-3 else 1 - probs[i, labels[i]],
            "forgetting": E if not c.any() else sum(c[t - 1] == 1 and c[t] == 0 for t in range(1, E)),
            "threshold_lt": 1.0 if first_correct is None else first_correct / E,
            "learning_time": 1.0 if first_below is None else first_below / E,
            "learning_time(rule=count)": sum(running[t, i] > tau for t in range(E)) / E,
            "loss_sensitivity": math.fsum(grads["l1"][:, i]) / E,
            "csg": math.fsum(grads["l2"][:, i]),
            "curvature": math.fsum(curvature[:, i]) / E,
            "aum": -math.fsum(margin[:, i]) / E,
            "el2n": math.fsum(el2n[:window, i]) / window,
            "variability": float(np.sqrt(np.mean((p_label[:, i] - p_label[:, i].mean()) ** 2))),
        }
        for name, value in row.items():
            out.setdefault(name, []).append(value)
    scores = {name: np.array(v, dtype=np.float64) for name, v in out.items()}
    scores["ssft"] = _ssft_by_hand(runs, base, labels, seed)
    scores["confident_learning"] = _confident_learning_by_hand(runs, base, labels, seed)
    return scores


def _ssft_by_hand(runs: dict[str, Path], base: str, labels: np.ndarray, seed: int) -> np.ndarray:
    """Stratified seeded halves; each sample from the run where it was in the first split: the first
    second-phase epoch after which it is never again correct (E if it stays correct), 1 - t/E."""
    halves = [np.sort(h) for _, h in StratifiedKFold(2, shuffle=True, random_state=seed).split(np.zeros(N), labels)]
    out = np.full(N, np.nan)
    for a, b in ((0, 1), (1, 0)):
        traces = _read(runs, f"{base} on=half{a}/2@{seed} then=half{b}/2@{seed}", "ssft_correct.correct")
        assert np.array_equal(np.flatnonzero(~np.isnan(traces).all(axis=0)), halves[a])
        for i in halves[a]:
            t = next(t for t in range(E + 1) if not (traces[t:, i] == 1).any())
            out[i] = 1 - t / E
    return out


def _confident_learning_by_hand(runs: dict[str, Path], base: str, labels: np.ndarray, seed: int) -> np.ndarray:
    """Out-of-fold probabilities from 3 stratified folds (each fold's model trained on the other two),
    cleanlab's confident-learning flags + (1 - self-confidence)."""
    from cleanlab.filter import find_label_issues

    folds = [np.sort(f) for _, f in StratifiedKFold(3, shuffle=True, random_state=seed).split(np.zeros(N), labels)]
    pred, phi = np.full((N, 10), np.nan), np.full(N, np.nan)
    for k, held in enumerate(folds):
        run = f"{base} on=fold{k}/3@{seed}"
        pred[held] = _read(runs, run, "eval_pass[epochs=last].probs_last")[held]
        phi[held] = _read(runs, run, "eval_pass[epochs=last].phi")[0][held]
    pred /= pred.sum(axis=1, keepdims=True)
    flags = find_label_issues(labels, pred, filter_by="confident_learning", n_jobs=1)
    tail = 1 - pred[np.arange(N), labels]
    return flags + np.where(tail < 1e-3, 1 / (1 + np.exp(phi)), tail)


def _stability_by_hand(runs: dict[str, Path], seed: int) -> np.ndarray:
    """mem_i = mean correctness of the models that trained on i - of those that did not; model j
    trains on the first round(0.7 N) of default_rng([seed, j]).permutation(N), seed 1e6 (seed+1) + j."""
    inside, correct = [], []
    for j in range(K):
        mask = np.zeros(N, dtype=bool)
        mask[np.random.default_rng([seed, j]).permutation(N)[: round(0.7 * N)]] = True
        inside.append(mask)
        correct.append(_read(runs, f"digits clean mlp seed{1_000_000 * (seed + 1) + j} on=random0.7#{j}@{seed}",
                             "eval_pass[epochs=last].correct")[0])
    mem = np.full(N, np.nan)
    for i in range(N):
        a = [correct[j][i] for j in range(K) if inside[j][i]]
        b = [correct[j][i] for j in range(K) if not inside[j][i]]
        if a and b:
            mem[i] = np.mean(a) - np.mean(b)
    return mem


def _auroc_by_hand(positives: np.ndarray, scores: np.ndarray) -> float:
    p, n = scores[positives], scores[~positives]
    return float(((p[:, None] > n[None]).sum() + 0.5 * (p[:, None] == n[None]).sum()) / (len(p) * len(n)))


def _precision_at_k_by_hand(positives: np.ndarray, scores: np.ndarray) -> float:
    """k = positives; the samples tied at the k-th score share the places left (random tie-breaking)."""
    k = int(positives.sum())
    kth = np.sort(scores)[::-1][k - 1]
    above, tied = scores > kth, scores == kth
    return float((positives[above].sum() + positives[tied].sum() * (k - above.sum()) / tied.sum()) / k)


def test_every_proxy_recomputed_from_the_stored_records(experiment) -> None:
    result, runs = experiment
    for setting in (f"noise={RATE}", "clean"):
        for seed in SEEDS:
            table = result.scores[f"{setting}_seed{seed}"]
            labels = table["label"].to_numpy()
            mine = _proxies_by_hand(runs, f"digits {setting} mlp seed{seed}", labels, seed)
            assert set(mine) == set(table.columns) - {"index", "label", "clean_label", "positive"}
            for name, value in mine.items():
                np.testing.assert_allclose(table[name].to_numpy(), value, rtol=1e-12, atol=1e-15,
                                           err_msg=f"{name} {setting} seed {seed}")


def test_ground_truth_reference_metrics_and_leaderboard(experiment) -> None:
    result, runs = experiment
    rows = []
    for seed in SEEDS:
        noisy = result.scores[f"noise={RATE}_seed{seed}"]
        positives = noisy["positive"].to_numpy()
        assert np.array_equal(positives, noisy["label"] != noisy["clean_label"]) and positives.sum() == round(RATE * N)
        proxies = [c for c in noisy.columns if c not in ("index", "label", "clean_label", "positive")]
        for p in proxies:
            s = noisy[p].to_numpy()
            rows += [("mislabeled", p, "auroc", seed, _auroc_by_hand(positives, s)),
                     ("mislabeled", p, "auprc", seed, average_precision_score(positives, s)),
                     ("mislabeled", p, "precision_at_k", seed, _precision_at_k_by_hand(positives, s))]
            assert rows[-3][-1] == pytest.approx(roc_auc_score(positives, s), abs=1e-12)
        mem = _stability_by_hand(runs, seed)
        reference = result.tables[f"memorization/reference_seed{seed}.csv"]["reference"].to_numpy()
        np.testing.assert_array_equal(reference, mem)
        keep = np.isfinite(mem)
        clean = result.scores[f"clean_seed{seed}"]
        for p in proxies:
            s, r = clean[p].to_numpy()[keep], mem[keep]
            flat = np.ptp(s) == 0
            rows += [("memorization", p, "cosine", seed, s @ r / math.sqrt((s @ s) * (r @ r))),
                     ("memorization", p, "pearson", seed, np.nan if flat else stats.pearsonr(s, r)[0]),
                     ("memorization", p, "spearman", seed, np.nan if flat else stats.spearmanr(s, r)[0])]
    mine = pd.DataFrame(rows, columns=["task", "proxy", "metric", "seed", "value"])
    got = mine.merge(result.raw, on=["task", "proxy", "metric", "seed"], suffixes=("_mine", ""))
    assert len(got) == len(mine)
    np.testing.assert_allclose(got["value"], got["value_mine"], rtol=0, atol=1e-12)
    board = mine.groupby(["task", "proxy", "metric"])["value"].agg(["mean", "std", "count"]).reset_index()
    both = board.merge(result.leaderboard, on=["task", "proxy", "metric"], suffixes=("_mine", ""))
    assert len(both) == len(board)
    np.testing.assert_allclose(both["mean"], both["mean_mine"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(both["std"], both["std_mine"], rtol=0, atol=1e-12)  # over seeds, ddof = 1
    np.testing.assert_array_equal(both["n_seeds"], both["count"])
