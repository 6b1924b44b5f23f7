"""Errors raised from Python name run_experiment's keywords (`fix epochs`), the CLI's name its flags
(`fix --epochs`); `overwrite` without `out` is refused; `result.outputs` lists every file written."""

from __future__ import annotations

import json

import pytest

from harness.api import experiment_config, run_experiment
from harness.api_wording import as_keywords
from harness.cli import main
from harness.errors import HarnessError, SubsetTooLarge


@pytest.mark.parametrize("message, expected", [
    ("epochs must be an integer >= 1 (got 0); fix --epochs", "epochs must be an integer >= 1 (got 0); fix epochs"),
    ("--noisy-labels replaces --noise-rates; pass one of them", "noisy_labels replaces noise_rates; pass one of them"),
    ("pass --overwrite to replace it", "pass overwrite=True to replace it"),
    ("hide them with --no-progress.", "hide them with progress=False."),
    ("pass e.g. --gpus-per-run 0.25 to pack four", "pass e.g. gpus_per_run=0.25 to pack four"),
    ("it is one of --executor ray", "it is one of executor='ray'"),
    ("pass a folder (--out PATH)", "pass a folder (out=PATH)"),
    ("use --subset 30 or less", "use subset=30 or less"),
    ("pass --model text_bow", "pass model='text_bow'"),
    ("e.g. --device cuda:0.", "e.g. device='cuda:0'."),
    ("pass --proxy-arg curvature.n=2", "pass proxy_args=['curvature.n=2']"),
    ("--out '~x/y': no home", "out='~x/y': no home"),
    # a command to run keeps its flags, and so does a flag the option table does not know
    ("see `python -m harness run --proxies all --epochs 2`", "see `python -m harness run --proxies all --epochs 2`"),
    ("ray start --head --port=6379", "ray start --head --port=6379"),
])
def test_flags_become_keywords_outside_backticks(message: str, expected: str) -> None:
    assert as_keywords(message) == expected


def test_api_errors_name_keywords_and_cli_errors_name_flags(capsys) -> None:
    with pytest.raises(HarnessError) as raised:
        experiment_config(epochs=0)
    assert str(raised.value) == "epochs must be an integer >= 1 (got 0); fix epochs"
    assert main(["run", "--epochs", "0"]) == 2
    assert "fix --epochs" in capsys.readouterr().err


def test_run_experiment_words_errors_raised_while_planning(tmp_path) -> None:
    # planning (the dataset loaded) raises SubsetTooLarge, naming the option: the class and its fields stay
    with pytest.raises(SubsetTooLarge) as raised:
        run_experiment(proxies="csl", tasks="mislabeled", seeds=1, noise_rates=[0.1], epochs=1, subset=10**6,
                       device="cpu", store=tmp_path / "store", progress=False)
    assert "subset=1000000 is larger" in str(raised.value) and "--" not in str(raised.value)
    assert raised.value.available == 1437  # digits' training split


def test_overwrite_without_out_is_refused() -> None:
    with pytest.raises(HarnessError, match=r"no out is given \(nothing is written\); pass out=PATH or drop "
                                           r"overwrite=True"):
        experiment_config(overwrite=True)
    assert experiment_config(overwrite=True, out="somewhere").overwrite is True


def test_result_outputs_list_every_file_summary_json_lists(tmp_path) -> None:
    result = run_experiment(proxies="csl", tasks="mislabeled", seeds=1, noise_rates=[0.1], epochs=1, device="cpu",
                            bootstrap=0, store=tmp_path / "store", out=tmp_path / "out", progress=False,
                            executor="inprocess")  # the pool's workers cost seconds of imports each
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert list(result.outputs)[:4] == ["leaderboard", "raw", "markdown", "summary"]
    written = {path for paths in result.outputs.values() for path in paths}
    assert written == {"leaderboard.csv", "raw.csv", "leaderboard.md", "summary.json",
                       "scores/noise=0.1_seed0.csv", *summary["outputs"].get("suspects", [])}
    assert all((tmp_path / "out" / path).is_file() for path in written)
    assert summary["proxies"] == [{"label": "csl", "name": "csl", "params": {}, "class": "proxies.csl.CSL"}]
    assert summary["memprox"] and result.proxies == summary["proxies"]
    listed = {k: v if isinstance(v, list) else [v] for k, v in summary["outputs"].items()}
    assert listed == {k: v for k, v in result.outputs.items() if k != "summary"}


def test_tasks_tables_are_in_the_result_without_out(tmp_path) -> None:
    # the suspects ranking is what a data-quality user wants from Python: it was written only to a folder
    import io

    import pandas as pd

    common = dict(proxies="csl,aum", tasks="suspects", seeds=2, epochs=2, device="cpu", bootstrap=0,
                  store=tmp_path / "store", progress=False, executor="inprocess")
    alone = run_experiment(**common)
    written = run_experiment(**common, out=tmp_path / "out")
    assert written.reused and not written.trained  # the same runs: the same tables
    assert sorted(alone.tables) == sorted(written.tables) == sorted(written.outputs["suspects"]) == [
        "suspects/duplicates.csv", "suspects/suspects.csv", "suspects/suspects_seed0.csv",
        "suspects/suspects_seed1.csv", "suspects/train_test_duplicates.csv"]
    for name, table in alone.tables.items():
        on_disk = pd.read_csv(tmp_path / "out" / name)
        pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(table.to_csv(index=False))), on_disk)
    ranking = alone.tables["suspects/suspects.csv"]
    assert len(ranking) == 1437 and ranking["n_seeds"].eq(2).all()
    assert not (tmp_path / "results").exists() and sorted(p.name for p in tmp_path.iterdir()) == ["out", "store"]


@pytest.mark.parametrize("given", [{"memorization.k": 8, "memorization.fraction": 0.5},
                                   {"memorization": {"k": 8}, "memorization.fraction": 0.5},
                                   {"memorization": {"k": 8, "fraction": 0.5}}, ["memorization.k=8",
                                                                                 "memorization.fraction=0.5"]])
def test_task_args_take_the_flags_form_as_a_dict_too(given) -> None:
    cfg = experiment_config(tasks="memorization", task_args=given)
    assert cfg.task_args == {"memorization": {"k": 8, "fraction": 0.5}}


@pytest.mark.parametrize("given", [{"memorization.k": 8, "memorization": {"k": 9}},
                                   {"memorization": {"k": 9}, "memorization.k": 8}])
def test_a_parameter_given_twice_in_a_dict_is_refused(given) -> None:
    with pytest.raises(HarnessError, match=r"task_args sets memorization\.k twice; pass it once"):
        experiment_config(tasks="memorization", task_args=given)


def test_a_failed_proxy_is_a_warning_from_python(tmp_path, monkeypatch) -> None:
    import numpy as np

    from proxies.csl import CSL

    def broken(self, ctx):
        raise ValueError("a bug in the proxy")

    monkeypatch.setattr(CSL, "score", broken)
    with pytest.warns(RuntimeWarning, match=r"run_experiment: proxy csl failed for .*ValueError: a bug in the proxy; "
                                            r"left out of the leaderboard; the leaderboard leaves those out"):
        result = run_experiment(proxies="csl,aum", tasks="mislabeled", seeds=1, noise_rates=[0.1], epochs=1,
                                device="cpu", bootstrap=0, store=tmp_path / "store", progress=False,
                                executor="inprocess")
    assert len(result.failures) == 1 and set(result.leaderboard["proxy"]) == {"aum"}
    assert np.isfinite(result.scores["noise=0.1_seed0"]["aum"]).all()


def test_api_warnings_name_keywords_and_the_cli_builders_name_flags() -> None:
    """A warning shown while the API runs names keywords too; `build_config` (the CLI's) keeps the
    flags, and the warnings hook is put back however the call ends."""
    import warnings

    from harness.api import build_config

    hook = warnings.showwarning
    with pytest.warns(UserWarning) as shown:
        experiment_config(bootstrap=10)
    [message] = [str(w.message) for w in shown]
    assert message.startswith("bootstrap=10: with fewer than 100 resamples") and "--" not in message
    with pytest.warns(UserWarning, match=r"^--bootstrap 10: with fewer than 100 resamples"):
        build_config(bootstrap=10)
    with pytest.raises(HarnessError):
        experiment_config(bootstrap=10, epochs=0)
    assert warnings.showwarning is hook


def test_the_warning_hook_rewords_only_calls_threads_and_built_in_classes_and_goes_back_once() -> None:
    """Review findings: two overlapping calls left the hook in place for good; another thread's
    warning ("pip: use --out PATH") was reworded; a warning class with its own constructor was rebuilt
    from the text alone; `simplefilter("error")` raised the flag's wording."""
    import threading
    import warnings

    from harness.api_wording import keyword_warnings

    class Counted(UserWarning):
        def __init__(self, n: int) -> None:
            super().__init__(f"--epochs {n} is few")

    hook = warnings.showwarning
    entered, release = threading.Event(), threading.Event()

    def other_call() -> None:
        with keyword_warnings():
            entered.set()
            release.wait(10)

    seen: list[str] = []
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        hook_inside = warnings.showwarning
        thread = threading.Thread(target=other_call)
        with keyword_warnings():
            thread.start()
            entered.wait(10)
            warnings.warn("fix --epochs")
            warnings.warn(Counted(3))
            outside = threading.Thread(target=lambda: warnings.warn("pip: use --out PATH"))
            outside.start()
            outside.join()
        release.set()  # the other call ends last: the hook goes back then
        thread.join()
        seen = [str(w.message) for w in shown]
        assert warnings.showwarning is hook_inside
    assert seen == ["fix epochs", "--epochs 3 is few", "pip: use --out PATH"]
    assert warnings.showwarning is hook
    with pytest.raises(UserWarning, match=r"^bootstrap=10: "), warnings.catch_warnings():
        warnings.simplefilter("error")
        experiment_config(bootstrap=10)
