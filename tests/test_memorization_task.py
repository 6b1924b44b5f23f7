"""The memorization task: stability reference from K stored runs, loaded score files, and rows."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from baselines.stability import (
    EVAL_LAST,
    model_seed,
    stability_matrix,
    stability_memorization,
    stability_specs,
    subset_masks,
)
from harness.cli import main
from harness.datasets import load_dataset
from harness.ensemble import train_ensemble
from harness.errors import HarnessError
from harness.experiment import Experiment
from harness.prepared import file_sha, prepare
from harness.recipe import Recipe
from harness.runspec import Corruption, DataSpec, RunSpec
from harness.similarity import similarity_metrics
from harness.store import RunStore
from harness.subsets import subset_indices
from harness.tasks.memorization import boundary_tie_group

METRICS = {"cosine", "pearson", "spearman", "cosine_topk", "pearson_topk", "spearman_topk"}
SUBSET = 400


def _loop_mem(matrix: np.ndarray, members: list[np.ndarray]) -> np.ndarray:
    """mem_i written out sample by sample, from index lists rather than masks."""
    out = np.full(matrix.shape[1], np.nan)
    for i in range(matrix.shape[1]):
        ins = [j for j, m in enumerate(members) if i in set(m.tolist())]
        outs = [j for j in range(len(members)) if j not in ins]
        if ins and outs:
            out[i] = matrix[ins, i].mean() - matrix[outs, i].mean()
    return out


def _scores_csv(cfg) -> pd.DataFrame:
    return pd.read_csv(cfg.out / "scores" / "clean_seed0.csv")


@pytest.mark.filterwarnings("ignore:stability memorization undefined")
def test_relabelled_samples_are_memorized(digits, tmp_path: Path) -> None:
    """Three training labels flipped: models that trained on a flipped sample fit its wrong label,
    models that did not predict its true class, so its estimate is ~1; clean samples are ~0."""
    n, k = 150, 6
    masks = subset_masks(n, k, 0.7, 0)
    defined = np.flatnonzero((masks.sum(0) >= 2) & ((~masks).sum(0) >= 2))
    flip = defined[[3, n // 4, n // 2]]
    labels = digits.y_train.numpy().copy()
    labels[flip] = (labels[flip] + 3) % 10
    np.save(tmp_path / "labels.npy", labels)
    path = str(tmp_path / "labels.npy")
    corruption = Corruption(kind="label_file", label_file=path, label_file_sha=file_sha(path))
    data = prepare(DataSpec(dataset="digits", subset=n, corruption=corruption), load_dataset("digits", subset=n),
                   torch.device("cpu"))
    assert np.flatnonzero(data.positives).tolist() == sorted(flip.tolist())
    recipe = Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=0.0, batch_size=32, epochs=25,
                    schedule="constant", milestones=(), augment=False)
    specs = stability_specs(RunSpec(data.spec, "mlp", recipe, seed=0), k, 0.7)
    outs = train_ensemble(specs, data, [EVAL_LAST], progress=False)
    correct = np.stack([o.arrays[EVAL_LAST.key]["correct"][0] for o in outs])
    mem = stability_memorization(correct, masks).scores
    others = np.delete(mem, flip)
    assert np.nanmean(others) < 0.15
    assert (mem[flip] >= np.nanmean(others) + 0.5).all()
    assert mem[flip].mean() >= 0.75


def test_stability_specs_and_seeds(base_spec: RunSpec) -> None:
    specs = stability_specs(base_spec, 3, 0.7)
    assert [s.seed for s in specs] == [model_seed(0, j) for j in range(3)] == [1_000_000, 1_000_001, 1_000_002]
    assert [(s.train_on.kind, s.train_on.index, s.train_on.seed, s.train_on.fraction) for s in specs] == [
        ("random", j, 0, 0.7) for j in range(3)]
    assert all(s.data == base_spec.data and s.recipe == base_spec.recipe and s.then_on is None for s in specs)
    with pytest.raises(HarnessError, match="k >= 2"):
        stability_specs(base_spec, 1, 0.7)


@pytest.mark.filterwarnings("ignore:stability memorization undefined")
def test_experiment_rows_and_estimator_from_store(make_config) -> None:
    cfg = make_config(tasks=("memorization",), proxies="csl,final_loss", subset=SUBSET, epochs=2,
                      task_args={"memorization": {"k": 6}})
    exp = Experiment(cfg)
    (_, setting, base), = exp.plan.settings
    assert setting.data.corruption == Corruption() and setting.label == "clean"
    specs = stability_specs(base, 6, 0.7)
    assert set(exp.plan.runs) == {base, *specs}
    assert all(exp.plan.runs[s] == {EVAL_LAST} for s in specs)
    jobs = exp.jobs(exp.pending()[1])  # the K models train together, as one batched ensemble
    (reference_job,) = [j for j in jobs if set(j.specs) & set(specs)]
    assert set(reference_job.specs) == set(specs) and reference_job.engine == "ensemble"

    result = exp.run()
    raw = result.raw
    proxies = raw[raw.proxy != "reference"]
    assert set(proxies.proxy) == {"csl", "final_loss"}
    for _, sub in proxies.groupby("proxy"):
        assert set(sub.metric) == METRICS
        assert ((sub.value >= -1) & (sub.value <= 1)).all()
    ref_rows = raw[raw.proxy == "reference"].set_index("metric").value
    assert set(ref_rows.index) == {"reference_mean_stderr", "reference_split_half_pearson", "reference_flops",
                                   "reference_seconds", "reference_flops_rel", "reference_seconds_rel",
                                   "reference_topk_tied"}
    assert ref_rows["reference_mean_stderr"] >= 0
    # the reference's cost is the K runs' training plus final eval pass, from their manifests
    manifests = [RunStore(cfg.store).get(s).manifest for s in specs]
    want = sum(m.train_flops + m.recorders[EVAL_LAST.key].flops for m in manifests)
    assert ref_rows["reference_flops"] == pytest.approx(want)
    plain = RunStore(cfg.store).get(base).manifest.train_flops
    assert ref_rows["reference_flops_rel"] == pytest.approx(want / plain)
    # 6 models on 70 % subsets, 2 epochs (3 passes' worth per sample) plus one full eval pass each
    assert 6 * 0.7 < ref_rows["reference_flops_rel"] < 6 * (0.7 + 0.2)

    # the estimator equals a direct computation from the stored correctness of the K runs
    store = RunStore(cfg.store)
    labels = exp.prepared(base.data).labels
    members = [subset_indices(s.train_on, labels) for s in specs]
    for variant, array in (("correct", "correct"), ("prob", "p_label")):
        matrix = np.stack([store.get(s).arrays(EVAL_LAST.key)[array][0] for s in specs]).astype(np.float64)
        direct = _loop_mem(matrix, members)
        got = stability_memorization(*stability_matrix({s: store.get(s) for s in specs}, base, 6, 0.7, variant))
        np.testing.assert_allclose(got.scores, direct, atol=1e-12)
        if variant == "correct":
            mem = direct
            # the reference and its per-sample standard error are written beside the scores
            written = pd.read_csv(cfg.out / "memorization" / "reference_seed0.csv")
            np.testing.assert_allclose(written["reference"], direct, atol=1e-12)
            np.testing.assert_allclose(written["reference_stderr"], got.stderr, atol=1e-12, equal_nan=True)
            assert written["index"].tolist() == list(range(len(direct)))
    csv = _scores_csv(cfg)
    for proxy in ("csl", "final_loss"):
        want = similarity_metrics(csv[proxy].to_numpy(), mem)
        keep = ~np.isnan(mem)
        assert want["pearson"] == pytest.approx(np.corrcoef(csv[proxy].to_numpy()[keep], mem[keep])[0, 1])
        got = proxies[proxies.proxy == proxy].set_index("metric").value
        for metric in METRICS:
            assert got[metric] == pytest.approx(want[metric], abs=1e-9, nan_ok=True)

    # the same store reuses every run; a larger K trains only the new models
    again = Experiment(make_config(tasks=("memorization",), proxies="csl,final_loss", subset=SUBSET, epochs=2,
                                   task_args={"memorization": {"k": 8}}, out=cfg.out.parent / "out_k8"))
    done, pending = again.pending()
    assert sorted(s.train_on.index for s, _ in pending) == [6, 7]


@pytest.mark.filterwarnings("ignore:stability memorization undefined")
def test_reference_with_another_model(make_config) -> None:
    """memorization.model trains the K stability models with another architecture than the
    proxies' run, on the same data, recipe and subsets, and the task reads those runs."""
    cfg = make_config(tasks=("memorization",), proxies="csl", subset=SUBSET, epochs=1,
                      task_args={"memorization": {"k": 4, "model": "mlp_small"}})
    exp = Experiment(cfg)
    (_, _, base), = exp.plan.settings
    specs = stability_specs(replace(base, model="mlp_small"), 4, 0.7)
    assert base.model == "mlp" and set(exp.plan.runs) == {base, *specs}
    raw = exp.run().raw
    assert raw[(raw.proxy == "csl") & (raw.metric == "pearson")].value.notna().all()
    store = RunStore(cfg.store)
    assert all(store.get(s) is not None for s in specs)


def _write_fz(path: Path, mem: np.ndarray, labels: np.ndarray) -> str:
    np.savez(path, tr_mem=mem, tr_labels=labels)
    return str(path)


def _full_labels(digits) -> np.ndarray:
    return digits.y_train.numpy()


@pytest.mark.parametrize("case", ["short", "labels", "missing_key", "missing_file", "bad_kind"])
def test_bad_reference_file_stops_planning(make_config, digits, tmp_path: Path, case: str) -> None:
    labels = _full_labels(digits)
    mem = np.linspace(0, 1, len(labels))
    if case == "short":
        ref, match = "fz:" + _write_fz(tmp_path / "f.npz", mem[: SUBSET - 1], labels[: SUBSET - 1]), "length"
    elif case == "labels":
        wrong = labels.copy()
        wrong[7] = (wrong[7] + 1) % 10
        ref, match = "fz:" + _write_fz(tmp_path / "f.npz", mem, wrong), "labels differ for 1 of"
    elif case == "missing_key":
        np.savez(tmp_path / "c.npz", scores=mem)
        ref, match = f"cscore:{tmp_path / 'c.npz'}", "missing key"
    elif case == "missing_file":
        ref, match = f"fz:{tmp_path / 'nope.npz'}", "not found"
    else:
        ref, match = "influence:x.npz", "unknown --reference"
    cfg = make_config(tasks=("memorization",), subset=SUBSET, reference=ref)
    with pytest.raises(HarnessError, match=match):
        Experiment(cfg)
    assert not (cfg.store / "runs").exists() or not any((cfg.store / "runs").iterdir())


def test_cli_exits_2_before_training(digits, tmp_path: Path) -> None:
    labels = _full_labels(digits).copy()
    labels[0] = (labels[0] + 1) % 10
    ref = "fz:" + _write_fz(tmp_path / "f.npz", np.zeros(len(labels)), labels)
    store = tmp_path / "store"
    code = main(["run", "--tasks", "memorization", "--proxies", "csl", "--seeds", "1", "--epochs", "1",
                 "--reference", ref, "--out", str(tmp_path / "out"), "--store", str(store), "--no-progress"])
    assert code == 2
    assert not any((store / "runs").iterdir()) if (store / "runs").exists() else True


@pytest.mark.parametrize("args", [{"k": 1}, {"k": 2.5}, {"fraction": 1.0}, {"variant": "max"}, {"top_k": 0},
                                  {"K": 3}, {"model": "resnet9000"}])
def test_bad_task_args(make_config, args: dict) -> None:
    with pytest.raises(HarnessError, match="memorization"):
        Experiment(make_config(tasks=("memorization",), subset=SUBSET, task_args={"memorization": args}))


@pytest.mark.parametrize("kind", ["fz", "cscore"])
def test_loaded_reference_rows(make_config, digits, tmp_path: Path, kind: str) -> None:
    """A full-length file is used as its first N entries under --subset; a C-score file counts as
    1 - score. No stability runs are trained."""
    labels = _full_labels(digits)
    values = np.random.default_rng(0).random(len(labels))
    if kind == "fz":
        np.savez(tmp_path / "r.npz", tr_mem=values, tr_labels=labels)
        expected = values[:SUBSET]
    else:
        np.savez(tmp_path / "r.npz", scores=values, labels=labels)
        expected = 1.0 - values[:SUBSET]
    cfg = make_config(tasks=("memorization",), proxies="csl", subset=SUBSET, epochs=1,
                      reference=f"{kind}:{tmp_path / 'r.npz'}", task_args={"memorization": {"top_k": 7}})
    exp = Experiment(cfg)
    assert len(exp.plan.runs) == 1
    raw = exp.run().raw
    # a file has no stderr and no split halves: the only reference row is its k-th place tie group
    assert list(raw[raw.proxy == "reference"].metric) == ["reference_topk_tied"]
    assert raw[raw.proxy == "reference"].value.item() == boundary_tie_group(expected, 7)
    want = similarity_metrics(_scores_csv(cfg)["csl"].to_numpy(), expected, top_k=7)
    got = raw[raw.proxy == "csl"].set_index("metric").value
    for metric in METRICS:
        assert got[metric] == pytest.approx(want[metric], abs=1e-9)


def test_boundary_tie_group_flags_a_flat_top_k() -> None:
    """The k-th place's tie group: larger than k means the top-k set is constant in the reference,
    and the top-k correlations are blank (NaN) rather than a number from an arbitrary subset."""
    ref = np.array([1.0] * 5 + [0.5, 0.4, 0.3, 0.2, 0.1] + [0.0] * 10 + [np.nan])  # N = 20 without the NaN
    assert boundary_tie_group(ref, None) == 5  # k = 2 falls inside the five 1.0s
    assert boundary_tie_group(ref, 6) == 1  # k = 6: the 0.5 alone
    proxy = np.arange(21, dtype=float)
    m = similarity_metrics(proxy, ref, top_k=3)
    assert np.isnan(m["pearson_topk"]) and np.isnan(m["spearman_topk"])
    assert np.isfinite(similarity_metrics(proxy, ref, top_k=7)["pearson_topk"])


def test_a_top_k_covering_every_estimated_sample_warns(make_config, digits, tmp_path: Path) -> None:
    """top_k = N makes the top-k set every sample: the *_topk metrics are the plain ones, said by a
    warning rather than shown as a second measurement."""
    labels = _full_labels(digits)
    np.savez(tmp_path / "r.npz", tr_mem=np.random.default_rng(0).random(len(labels)), tr_labels=labels)
    cfg = make_config(tasks=("memorization",), proxies="csl", subset=SUBSET, epochs=1,
                      reference=f"fz:{tmp_path / 'r.npz'}", task_args={"memorization": {"top_k": SUBSET}})
    with pytest.warns(UserWarning, match=rf"memorization.top_k {SUBSET} is not below the {SUBSET} samples"):
        raw = Experiment(cfg).run().raw
    got = raw[raw.proxy == "csl"].set_index("metric").value
    assert got["pearson_topk"] == pytest.approx(got["pearson"]) and got["spearman_topk"] == pytest.approx(
        got["spearman"])
