"""Task parameters the way proxies have them: declared defaults, validated once in the constructor,
built once by make_tasks from --task-arg; one shared memorization reference; ground truth without
positives refused while planning."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from harness.cli import main
from harness.config import ExperimentConfig
from harness.errors import HarnessError
from harness.runspec import DataSpec
from harness.tasks import TASKS, make_tasks
from harness.tasks.reference import ReferenceConfig


def _sized(n: int) -> SimpleNamespace:
    """A stand-in for the loaded dataset where a task's settings read only its N."""
    return SimpleNamespace(n_train=n)


def test_defaults_and_overrides_land_in_params() -> None:
    theory, memorization = make_tasks(["theory", "memorization"], {"theory": {"bins": 7}})
    assert theory.params == {"bins": 7, "per_class": 5, "rule": "first"}
    assert memorization.params["top_k"] is None and memorization.params["k"] == 128


def test_one_reference_config_shared_by_every_task_that_uses_it() -> None:
    tasks = make_tasks(["memorization", "theory", "mislabeled"], {"memorization": {"k": 4, "fraction": 0.5}},
                       reference="stability")
    mem, theory, mislabeled = tasks
    assert mem.reference is theory.reference
    assert mem.reference == ReferenceConfig("stability", "", 4, 0.5, "correct", None)
    assert mislabeled.reference is None
    # theory alone still takes the reference's settings from memorization.*
    (theory,) = make_tasks(["theory"], {"memorization": {"k": 6}})
    assert theory.reference.k == 6


def test_reference_args_are_parsed_once(monkeypatch) -> None:
    import harness.tasks.base as base

    calls = []
    real = base.reference_config
    monkeypatch.setattr(base, "reference_config", lambda *a: calls.append(a) or real(*a))
    make_tasks(["memorization", "theory"], {"memorization": {"k": 4}})
    assert len(calls) == 1


@pytest.mark.parametrize(("names", "args", "match"), [
    (["mislabeled", "mislabeled"], {}, "more than once"),
    (["nosuch"], {}, "unknown task"),
    ([], {}, "no tasks"),
    (["memorization"], {"memorisation": {"fraction": 0.5}}, "unknown task 'memorisation'.*valid tasks: "),
    (["memorization"], {"nosuch": {"k": 1}}, "unknown task 'nosuch'"),
    (["mislabeled"], {"theory": {"bins": 3}}, "not among the selected tasks"),
    (["mislabeled"], {"memorization": {"k": 4}}, "not among the selected tasks"),
    (["theory"], {"memorization": {"top_k": 4}}, r"\['top_k'\] \(the memorization task is not selected"),
    (["theory"], {"theory": {"binz": 3}}, "no parameter.*binz.*valid: bins, per_class, rule"),
    (["theory"], {"theory": {"rule": "last"}}, "theory.rule"),
    (["mislabeled"], {"mislabeled": {"rate": 0.1}}, "task 'mislabeled' has no parameter.*valid: none"),
    (["memorization"], {"memorization": {"top_k": 0}}, "memorization.top_k"),
    (["memorization"], {"memorization": {"k": 1}}, "memorization.k"),
])
def test_bad_task_selection_or_args(names, args, match) -> None:
    with pytest.raises(HarnessError, match=match):
        make_tasks(names, args)


def test_cost_borrows_settings_without_building_other_tasks(monkeypatch) -> None:
    built = []
    for name, cls in TASKS.items():
        original = cls.__init__
        monkeypatch.setattr(cls, "__init__", lambda self, *a, _o=original, _n=name, **k: built.append(_n) or _o(
            self, *a, **k))
    mislabeled, cost = make_tasks(["mislabeled", "cost"])
    cfg = ExperimentConfig(seeds=(0, 1), noise_rates=(0.05, 0.1))
    settings = cost.settings(cfg, DataSpec(), _sized(1000))
    assert sorted(built) == ["cost", "mislabeled"]  # once each, by make_tasks
    assert [(s.task, s.label, s.seed) for s in settings] == [("cost", "noise=0.05", 0), ("cost", "noise=0.05", 1)]
    assert [s.data for s in settings] == [s.data for s in mislabeled.settings(cfg, DataSpec(), _sized(1000))[:2]]
    (alone,) = make_tasks(["cost"])
    assert [s.label for s in alone.settings(cfg, DataSpec(), _sized(1000))] == ["clean", "clean"]


@pytest.mark.parametrize(("fields", "n", "match"), [
    ({"noise_rates": (0.0001,)}, 1000, "flips no label"),
    ({"noise_rates": (0.1, 0.0)}, 1000, "flips no label"),
    ({"noise_rates": ()}, 1000, "no noise rates"),
    ({"noise_rates": (0.9999,)}, 1000, "flips every label"),  # no negatives: as empty a leaderboard
])
def test_mislabeled_without_positives_is_refused_while_planning(fields, n, match) -> None:
    (task,) = make_tasks(["mislabeled"])
    with pytest.raises(HarnessError, match=match):
        task.settings(ExperimentConfig(seeds=(0,), **fields), DataSpec(), _sized(n))


@pytest.mark.parametrize("pairs", [0, -1, 500, 501])  # 500 pairs of 1,000: no sample outside them
def test_duplicates_without_valid_pairs_are_refused(pairs: int) -> None:
    (task,) = make_tasks(["duplicates"])
    with pytest.raises(HarnessError, match="duplicate-pairs"):
        task.settings(ExperimentConfig(seeds=(0,), duplicate_pairs=pairs), DataSpec(), _sized(1000))
    # the default (None) is 0.5 % of N; an explicit value is kept as given
    assert task.settings(ExperimentConfig(seeds=(0,)), DataSpec(), _sized(1000))[0].data.corruption.pairs == 5
    (setting,) = task.settings(ExperimentConfig(seeds=(0,), duplicate_pairs=3), DataSpec(), _sized(1000))
    assert setting.data.corruption.pairs == 3
    (setting,) = task.settings(ExperimentConfig(seeds=(0,), duplicate_pairs=499), DataSpec(), _sized(1000))
    assert setting.data.corruption.pairs == 499


def test_label_file_equal_to_the_clean_labels_is_refused(digits, tmp_path: Path) -> None:
    np.save(tmp_path / "same.npy", digits.y_train.numpy())
    (task,) = make_tasks(["mislabeled"])
    cfg = ExperimentConfig(seeds=(0,), noisy_labels=str(tmp_path / "same.npy"))
    with pytest.raises(HarnessError, match="equals the clean labels"):
        task.settings(cfg, DataSpec(), digits)
    np.save(tmp_path / "shifted.npy", (digits.y_train.numpy() + 1) % 10)  # every label differs
    cfg = ExperimentConfig(seeds=(0,), noisy_labels=str(tmp_path / "shifted.npy"))
    with pytest.raises(HarnessError, match="differs from the clean labels on all"):
        task.settings(cfg, DataSpec(), digits)


def test_a_label_file_in_another_order_is_warned_about(digits, tmp_path: Path) -> None:
    """A file of labels in another order agrees with the clean ones on about 1/C of the samples, and
    passed every check (it neither equals them nor differs everywhere); real noise keeps most labels."""
    import warnings

    (task,) = make_tasks(["mislabeled"])
    clean = digits.y_train.numpy()
    np.save(tmp_path / "shuffled.npy", np.random.default_rng(0).permutation(clean))
    with pytest.warns(UserWarning, match=r"agrees with the clean labels on only \d+\.\d% .* canonical order"):
        task.settings(ExperimentConfig(seeds=(0,), noisy_labels=str(tmp_path / "shuffled.npy")), DataSpec(), digits)
    noisy = clean.copy()
    noisy[: len(clean) * 4 // 10] = (noisy[: len(clean) * 4 // 10] + 1) % 10  # 40 % noise, CIFAR-10N's worst
    np.save(tmp_path / "noisy.npy", noisy)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        task.settings(ExperimentConfig(seeds=(0,), noisy_labels=str(tmp_path / "noisy.npy")), DataSpec(), digits)


@pytest.mark.parametrize("argv", [
    ["--task-arg", "memorisation.fraction=0.5", "--tasks", "memorization"],
    ["--task-arg", "nosuch.k=1"],
    ["--tasks", "mislabeled,mislabeled"],
    ["--noise-rates", "0.0001"],
    ["--duplicate-pairs", "0", "--tasks", "duplicates"],
])
def test_cli_exits_2_and_trains_nothing(argv, tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    code = main(["run", "--proxies", "csl", "--seeds", "1", "--epochs", "1", "--no-progress", "--device", "cpu",
                 "--out", str(tmp_path / "out"), "--store", str(store), *argv])
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    assert not (store / "runs").exists() or not any((store / "runs").iterdir())
