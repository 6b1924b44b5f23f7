"""The suspects task: real data without ground truth, ranked for a person to check. Its CSV must
hold the stored run's own predictions and the proxies' own scores in the proxy's order, its row
must be the share of the top k the model predicts as another class, and on data with real
(unannounced) label errors the top suspects must be those errors."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from harness.cli import main
from harness.errors import HarnessError
from harness.experiment import Experiment
from harness.runspec import RunSpec
from harness.tasks import make_tasks
from harness.tasks.suspects import EVAL_LAST, Suspects


def _run(make_config, **overrides):
    cfg = make_config(tasks=("suspects",), **overrides)
    exp = Experiment(cfg)
    return exp, exp.run()


def test_the_csv_ranks_every_sample_with_the_runs_own_predictions(make_config) -> None:
    exp, result = _run(make_config, proxies="csl,aum", task_args={"suspects": {"k": 25}})
    out = Path(exp.cfg.out)
    table = pd.read_csv(out / "suspects" / "suspects_seed0.csv")
    scores = result.scores["clean_seed0"]
    n = len(scores)
    assert list(table.columns) == ["rank", "index", "label", "label_name", "duplicates", "duplicate_labels_differ",
                                   "predicted", "predicted_name", "p_label", "suggested", "suggested_name",
                                   "p_suggested", "csl", "aum"]
    classes = [str(c) for c in range(10)]  # digits' class names
    assert table["label_name"].astype(str).tolist() == [classes[c] for c in table["label"]]
    assert table["predicted_name"].astype(str).tolist() == [classes[c] for c in table["predicted"]]
    assert table["rank"].tolist() == list(range(1, n + 1)) and sorted(table["index"]) == list(range(n))
    assert (np.diff(table["csl"].to_numpy()) <= 0).all()  # csl by default, most suspicious first
    by_index = table.set_index("index").sort_index()
    np.testing.assert_allclose(by_index["csl"], scores["csl"], rtol=1e-6)
    np.testing.assert_allclose(by_index["aum"], scores["aum"], rtol=1e-6)
    (base,) = [b for _, _, b in exp.plan.settings]
    stored = exp.store.get(base).arrays(EVAL_LAST.key)
    assert (by_index["predicted"].to_numpy() == stored["probs_last"].argmax(1)).all()
    np.testing.assert_allclose(by_index["p_label"], stored["p_label"][-1], rtol=1e-6)
    assert (by_index["label"].to_numpy() == scores["label"].to_numpy()).all()
    # the row: share of csl's 25 highest that the model predicts as another class (no ties in csl here)
    top = np.argsort(-scores["csl"].to_numpy(), kind="stable")[:25]
    other = by_index["predicted"].to_numpy() != by_index["label"].to_numpy()
    row = result.raw[(result.raw.proxy == "csl") & (result.raw.metric == "predicted_other_at_k")]
    assert row["value"].item() == pytest.approx(other[top].mean())
    assert (out / "figures" / "suspects_seed0.png").stat().st_size > 0


def test_real_label_errors_top_the_list(tmp_path: Path, make_config) -> None:
    """Digits with 5 % of the labels changed in the file itself: the task knows nothing of it, and
    the 40 highest-CSL samples are mostly those changed labels (chance would give 2 of 40)."""
    digits = load_digits()
    rng = np.random.default_rng(0)
    y = digits.target.copy()
    changed = rng.choice(len(y), size=int(0.05 * len(y)), replace=False)
    y[changed] = (y[changed] + rng.integers(1, 10, len(changed))) % 10
    x = (digits.images * 255 / 16).round().astype(np.uint8)
    np.savez(tmp_path / "mine.npz", x=x, y=y)
    exp, _ = _run(make_config, dataset=f"npz:{tmp_path / 'mine.npz'}", epochs=10, lr=0.1)
    table = pd.read_csv(Path(exp.cfg.out) / "suspects" / "suspects_seed0.csv")
    hits = np.isin(table["index"].head(40), changed).sum()
    assert hits >= 30, hits


def test_by_orders_and_draws_by_another_proxy(make_config) -> None:
    exp, _ = _run(make_config, proxies="csl,final_loss", task_args={"suspects": {"by": "final_loss", "k": 8}})
    table = pd.read_csv(Path(exp.cfg.out) / "suspects" / "suspects_seed0.csv")
    assert (np.diff(table["final_loss"].to_numpy()) <= 0).all()
    assert not (np.diff(table["csl"].to_numpy()) <= 0).all()


def test_image_folder_suspects_name_their_files(tmp_path: Path, make_config) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("cat", "dog"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(tmp_path / "imgs" / c / f"{c}{i}.png")
    exp, _ = _run(make_config, dataset=f"imagefolder:{tmp_path / 'imgs'}", task_args={"suspects": {"k": 4}})
    table = pd.read_csv(Path(exp.cfg.out) / "suspects" / "suspects_seed0.csv")
    names = exp.dataset.sample_names
    assert [names[i] for i in table["index"]] == table["file"].tolist()
    assert (Path(exp.cfg.out) / "figures" / "suspects_seed0.png").exists()


def test_suspects_shares_the_clean_run_with_cost_adding_the_eval_pass_and_class_probs(make_config) -> None:
    exp = Experiment(make_config(tasks=("suspects", "cost"), proxies="csl"))
    runs: dict[RunSpec, set] = exp.plan.runs
    assert len(runs) == 1
    assert {r.key for r in next(iter(runs.values()))} == {"train_loss", EVAL_LAST.key, "train_class_prob"}


def test_a_by_that_names_no_selected_proxy_is_refused_before_training(tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    code = main(["run", "--tasks", "suspects", "--proxies", "csl", "--task-arg", "suspects.by=aum",
                 "--store", str(store), "--out", str(tmp_path / "out"), "--epochs", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "suspects.by=aum names no selected proxy; pass one of csl, or add aum to --proxies" in err
    assert not store.exists()


@pytest.mark.parametrize("args, message", [
    ({"k": 0}, "suspects.k must be a positive integer"),
    ({"k": 401}, "suspects.k must be at most 400"),
    ({"by": 3}, "suspects.by must name a proxy"),
    ({"kk": 3}, "task 'suspects' has no parameter(s) ['kk']"),
    ({"duplicates": "nearr"}, "suspects.duplicates must be one of near, exact, off, got 'nearr'"),
    ({"duplicate_threshold": 0}, "suspects.duplicate_threshold must be a finite number > 0"),
    ({"duplicate_threshold": 1.5}, "suspects.duplicate_threshold must be at most 1"),
    ({"duplicate_threshold": "x"}, "suspects.duplicate_threshold must be a finite number > 0"),
])
def test_bad_parameters_are_refused(args: dict, message: str) -> None:
    with pytest.raises(HarnessError, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        make_tasks(["suspects"], {"suspects": args})


def test_the_cli_points_at_the_suspects_and_counts_resumed_runs(tmp_path: Path, capsys, monkeypatch) -> None:
    argv = ["run", "--tasks", "suspects", "--proxies", "csl", "--seeds", "1", "--epochs", "2", "--executor",
            "inprocess", "--no-progress", "--store", str(tmp_path / "store"), "--out", str(tmp_path / "out")]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert f"suspects: {tmp_path / 'out' / 'suspects'}/  (every sample, most suspicious first" in out
    assert f"duplicates: {tmp_path / 'out' / 'suspects' / 'duplicates.csv'}  (copies and near copies" in out
    assert "runs: 1 trained, 0 reused from the store" in err

    from harness.evaluation import ExperimentResult

    real = Experiment.run

    def resumed_run(self):  # as if the run had been interrupted at epoch 1 and resumed from there
        result: ExperimentResult = real(self)
        result.resumed = dict.fromkeys(result.trained, 1)
        return result

    monkeypatch.setattr(Experiment, "run", resumed_run)
    assert main([*argv[:-4], "--store", str(tmp_path / "store2"), "--out", str(tmp_path / "out2")]) == 0
    assert "runs: 1 trained (1 resumed from their checkpoints), 0 reused from the store" in capsys.readouterr().err


def test_two_seeds_are_ranked_together_by_their_mean(make_config) -> None:
    exp, result = _run(make_config, seeds=(0, 1), proxies="csl,aum")
    folder = Path(exp.cfg.out) / "suspects"
    assert sorted(p.name for p in folder.iterdir()) == ["duplicates.csv", "suspects.csv", "suspects_seed0.csv",
                                                        "suspects_seed1.csv", "train_test_duplicates.csv"]
    combined = pd.read_csv(folder / "suspects.csv", dtype={"duplicates": str})
    seeds = [pd.read_csv(folder / f"suspects_seed{s}.csv").set_index("index").sort_index() for s in (0, 1)]
    assert list(combined.columns) == ["rank", "index", "label", "label_name", "duplicates", "duplicate_labels_differ",
                                      "n_seeds", "predicted_other", "p_label", "suggested", "suggested_name",
                                      "p_suggested", "csl", "aum"]
    assert combined.set_index("index").loc[1275, "duplicates"] == "1323"  # two near-identical 1s in digits
    assert (combined["n_seeds"] == 2).all() and (np.diff(combined["csl"].to_numpy()) <= 0).all()
    by_index = combined.set_index("index").sort_index()
    for column in ("csl", "aum", "p_label"):
        np.testing.assert_allclose(by_index[column], (seeds[0][column] + seeds[1][column]) / 2, rtol=1e-6)
    other = sum((s["predicted"] != s["label"]).astype(float) for s in seeds) / 2
    np.testing.assert_array_equal(by_index["predicted_other"], other)
    csl = [result.scores[f"clean_seed{s}"]["csl"].to_numpy() for s in (0, 1)]
    np.testing.assert_allclose(by_index["csl"], (csl[0] + csl[1]) / 2, rtol=1e-6)


def test_a_proxy_missing_from_one_seed_is_left_out_of_the_seed_mean(tmp_path: Path) -> None:
    """A proxy that failed on one seed (a reported failure) has no column there: the mean over seeds
    is taken of the proxies every seed scored, ranked by `by` when it is among them, else csl."""
    from harness.tasks.suspects import Suspects

    task = make_tasks(["suspects"], {"suspects": {"by": "aum"}})[0]
    assert isinstance(task, Suspects)
    base = {"index": [0, 1, 2], "label": [0, 1, 1], "p_label": [0.9, 0.2, 0.5]}
    task.by_seed = {0: pd.DataFrame({**base, "predicted": [0, 0, 1], "csl": [1.0, 5.0, 3.0], "aum": [0.0, 2.0, 1.0]}),
                    1: pd.DataFrame({**base, "predicted": [0, 1, 1], "csl": [3.0, 1.0, 2.0]})}
    from harness.tasks.base import EvalContext

    ctx = SimpleNamespace(out=tmp_path, artifacts={}, tables={})
    ctx.keep_table = partial(EvalContext.keep_table, ctx)
    task.write_combined(ctx, "aum")
    table = pd.read_csv(tmp_path / "suspects" / "suspects.csv")
    assert list(table.columns) == ["rank", "index", "label", "n_seeds", "predicted_other", "p_label", "csl"]
    assert table["index"].tolist() == [1, 2, 0] and table["csl"].tolist() == [3.0, 2.5, 2.0]
    assert table["predicted_other"].tolist() == [0.5, 0.0, 0.0]
    assert ctx.artifacts == {"suspects": ["suspects/suspects.csv"]}


def _digits_with_copies(tmp_path: Path) -> tuple[str, np.ndarray]:
    """Digits as a file, with the paper's duplicate planted by hand (slot 5 holds image 900 under
    another label) and a darker copy of image 300 in slot 17 under its own label."""
    digits = load_digits()
    x = (digits.images * 255 / 16).round().astype(np.uint8)
    y = digits.target.copy()
    x[5], y[5] = x[900], (y[900] + 3) % 10
    x[17], y[17] = (x[300] * 0.8).round().astype(np.uint8), y[300]
    np.savez(tmp_path / "copies.npz", x=x, y=y)
    return f"npz:{tmp_path / 'copies.npz'}", y


def test_duplicates_are_listed_with_other_labels_first(tmp_path: Path, make_config) -> None:
    dataset, y = _digits_with_copies(tmp_path)
    exp, _ = _run(make_config, dataset=dataset, proxies="csl", task_args={"suspects": {"k": 8}})
    out = Path(exp.cfg.out)
    pairs = pd.read_csv(out / "suspects" / "duplicates.csv")
    assert list(pairs.columns) == ["a", "b", "distance", "mirrored", "shifted", "label_a", "label_a_name", "label_b",
                                   "label_b_name", "labels_differ"]
    # labels differ only here
    assert pairs.iloc[0].tolist() == [5, 900, 0.0, False, False, y[5], y[5], y[900], y[900], True]
    assert not pairs["labels_differ"].iloc[1:].any()
    darker = pairs[(pairs["a"] == 17) & (pairs["b"] == 300)]
    assert len(darker) == 1 and 0 < darker["distance"].item() < 1e-3  # rounding: not exactly 0
    table = pd.read_csv(out / "suspects" / "suspects_seed0.csv", dtype={"duplicates": str}).set_index("index")
    assert table.loc[5, "duplicates"] == "900" and table.loc[900, "duplicates"] == "5"
    assert table.loc[5, "duplicate_labels_differ"] and table.loc[900, "duplicate_labels_differ"]
    assert table.loc[17, "duplicates"] == "300" and not table.loc[17, "duplicate_labels_differ"]
    paired = set(pairs["a"]) | set(pairs["b"])
    assert table.loc[[i for i in table.index if i not in paired], "duplicates"].isna().all()
    assert (out / "figures" / "duplicates.png").stat().st_size > 0


def test_duplicates_off_writes_no_pairs_and_no_columns(tmp_path: Path, make_config) -> None:
    dataset, _ = _digits_with_copies(tmp_path)
    exp, _ = _run(make_config, dataset=dataset, task_args={"suspects": {"duplicates": "off"}})
    out = Path(exp.cfg.out)
    assert not (out / "suspects" / "duplicates.csv").exists() and not (out / "figures" / "duplicates.png").exists()
    assert "duplicates" not in pd.read_csv(out / "suspects" / "suspects_seed0.csv").columns


def test_duplicates_exact_finds_only_the_byte_equal_copy(tmp_path: Path, make_config) -> None:
    dataset, _ = _digits_with_copies(tmp_path)
    exp, _ = _run(make_config, dataset=dataset, task_args={"suspects": {"duplicates": "exact"}})
    pairs = pd.read_csv(Path(exp.cfg.out) / "suspects" / "duplicates.csv")
    assert pairs[["a", "b", "distance"]].values.tolist() == [[5, 900, 0.0]]


def test_a_near_duplicate_search_too_big_to_finish_is_refused_before_training(tmp_path: Path, monkeypatch,
                                                                               capsys) -> None:
    import harness.tasks.suspects as suspects

    monkeypatch.setattr(suspects, "MAX_NEAR_WORK", 1437**2 * 64 - 1)  # digits' 1,437 images of 8 x 8 just exceed it
    argv = ["run", "--tasks", "suspects", "--proxies", "csl", "--epochs", "1", "--store", str(tmp_path / "store"),
            "--out", str(tmp_path / "out"), "--seeds", "1", "--executor", "inprocess"]  # one run, trained here
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert ("suspects: a near-duplicate search over 1437 samples (and 360 test samples) of 64 values would take "
            "an hour or more") in err
    assert "pass --task-arg suspects.duplicates=exact" in err and not (tmp_path / "store").exists()
    assert main([*argv, "--task-arg", "suspects.duplicates=exact"]) == 0


def test_the_table_names_each_class_id_by_the_datasets_class_names() -> None:
    """Ids alone sent the reader to look up the class order; names that differ from the ids show the mapping."""
    dataset = SimpleNamespace(sample_names=["a.png", "b.png", "c.png"], classes=["cat", "dog", "ship"],
                              is_tokens=False)
    ctx = SimpleNamespace(data=SimpleNamespace(n=3, labels=np.array([2, 0, 1]), dataset=dataset))
    table = Suspects.table(ctx, {"csl": np.array([0.5, 0.1, 0.9])}, np.array([0, 0, 2]), np.array([0.1, 0.8, 0.2]),
                           None)
    assert table["label_name"].tolist() == ["ship", "cat", "dog"]
    assert table["predicted_name"].tolist() == ["cat", "cat", "ship"]
    assert list(table.columns) == ["index", "file", "label", "label_name", "predicted", "predicted_name", "p_label",
                                   "csl"]


def test_the_size_check_counts_the_mirrored_search_of_images(tmp_path: Path, monkeypatch, capsys) -> None:
    """Images are searched twice (plain and mirrored): a limit above one search but below two refuses."""
    import harness.tasks.suspects as suspects

    monkeypatch.setattr(suspects, "MAX_NEAR_WORK", 2 * 1437 * (1437 + 360) * 64 - 1)
    argv = ["run", "--tasks", "suspects", "--proxies", "csl", "--epochs", "1", "--store", str(tmp_path / "store"),
            "--out", str(tmp_path / "out"), "--seeds", "1", "--executor", "inprocess"]
    assert main(argv) == 2
    assert "twice for images, searched mirrored too" in capsys.readouterr().err
    assert not (tmp_path / "store").exists()
