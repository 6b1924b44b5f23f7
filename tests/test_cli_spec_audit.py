"""The command line as a user meets it (audit against docs/quickstart.md and docs/experiments.md):
exit codes when the reader of stdout goes away, a symbolic link loop as --out or --store, a label
file whose path names a score file no record could list, and the printed recipe of a preset.

Nothing here trains: the CLI cases stop at the output check or replace `Experiment.run`, and the
write case publishes a made-up result.
"""

from __future__ import annotations

import io
import json
import re
import sys

import pandas as pd
import pytest
import torch

from harness.api import experiment_config
from harness.cli import main, preset_note
from harness.evaluation import RAW_COLUMNS, ExperimentResult
from harness.leaderboard import aggregate
from harness.outputs import RECORD, staging, write

#: A tiny digits experiment (nothing trains in these tests).
TINY = ["--proxies", "csl", "--tasks", "mislabeled", "--noise-rates", "0.1", "--seeds", "1", "--epochs", "1",
        "--device", "cpu", "--executor", "inprocess", "--no-progress", "--bootstrap", "0"]


class _GoneReader(io.TextIOBase):
    """stdout of `python -m harness ... | head -1` once head has exited."""

    def write(self, text: str) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    def flush(self) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_list_into_a_closed_pipe_exits_0(monkeypatch) -> None:
    """`list | head -1` was a BrokenPipeError traceback and exit 1."""
    monkeypatch.setattr(sys, "stdout", _GoneReader())
    assert main(["list"]) == 0


def test_run_into_a_closed_pipe_keeps_its_exit_code_and_failures(tmp_path, capsys, monkeypatch) -> None:
    """`run ... | head` raised BrokenPipeError at the leaderboard: exit 1 for a run that succeeded,
    a traceback, and the failure list and phases never printed."""
    from harness.experiment import Experiment

    board = aggregate(pd.DataFrame(columns=RAW_COLUMNS))
    outcome: list[str] = []

    def run(self):
        return ExperimentResult(pd.DataFrame(columns=RAW_COLUMNS), board, failures=list(outcome))

    monkeypatch.setattr(Experiment, "run", run)
    argv = ["run", *TINY, "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store")]
    monkeypatch.setattr(sys, "stdout", _GoneReader())
    assert main(argv) == 0
    assert "phases:" in capsys.readouterr().err
    outcome.append("proxy csl failed for digits: ValueError: boom")
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "  - proxy csl failed for digits: ValueError: boom" in err.splitlines()
    assert "Traceback" not in err


@pytest.mark.parametrize("flag", ["--out", "--store"])
def test_a_symlink_loop_as_out_or_store_is_bad_input(tmp_path, capsys, flag) -> None:
    """A link loop was a RuntimeError traceback with exit 1 from Path.resolve, not one error line."""
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    paths = {"--out": str(tmp_path / "out"), "--store": str(tmp_path / "store"), flag: str(loop / "sub")}
    code = main(["run", *TINY, *[x for kv in paths.items() for x in kv]])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith(f"error: {flag} {loop / 'sub'} cannot be resolved"), err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["loop"]


def test_a_label_file_path_with_a_backslash_names_a_score_file(tmp_path) -> None:
    r"""`--noisy-labels 'C:\labels.npy'` named scores/labels=C:\labels.npy_seed0.csv, which no record may
    list: after training the write stopped with a RuntimeError and no output was published."""
    out = tmp_path / "out"
    cfg = experiment_config(proxies="csl", tasks="mislabeled", noisy_labels="C:\\labels.npy", seeds=1, out=out,
                            store=tmp_path / "store")
    frame = pd.DataFrame({"index": [0, 1], "label": [3, 4], "csl": [0.25, 1.5]})
    result = ExperimentResult(pd.DataFrame(columns=RAW_COLUMNS), aggregate(pd.DataFrame(columns=RAW_COLUMNS)),
                              scores={"labels=C:\\labels.npy_seed0": frame})
    with staging(cfg.out) as tmp:
        write(result, {}, tmp, {}, cfg, "e1", torch.device("cpu"), dict)
    written = out / "scores" / "labels=C:_labels.npy_seed0.csv"
    assert written.read_text() == frame.to_csv(index=False)
    assert "scores/labels=C:_labels.npy_seed0.csv" in json.loads((out / RECORD).read_text())["files"]
    assert json.loads((out / "summary.json").read_text())["outputs"]["scores"] == [
        "scores/labels=C:_labels.npy_seed0.csv"]


def test_the_printed_recipe_shows_precision_and_memory_format() -> None:
    """`--preset gpu --precision fp32` printed the same recipe as `--preset gpu` (bf16): an override
    of the preset's precision could not be seen."""
    gpu = preset_note(experiment_config(preset="gpu"))
    assert gpu.endswith("batch 512, augmentation off, bf16, channels-last")
    fp32 = preset_note(experiment_config(preset="gpu", precision="fp32"))
    assert fp32.endswith("batch 512, augmentation off, channels-last")
    assert preset_note(experiment_config()).endswith("batch 128, augmentation off")


def test_the_experiment_identity_reads_the_selection_as_the_registry_does() -> None:
    """' csl' or 'aum()' in a rerun selects the same proxies, but the identity hashed the raw text, so
    the rerun was refused as "another experiment" needing --overwrite. Plain selections keep theirs."""
    from harness.config import ExperimentConfig, experiment_id

    plain = experiment_id(ExperimentConfig(proxies="csl,aum"))
    assert experiment_id(ExperimentConfig(proxies=" csl , aum()")) == plain
    assert experiment_id(ExperimentConfig(proxies="csl,el2n")) != plain
    variant = experiment_id(ExperimentConfig(proxies="curvature(n=2)"))
    assert variant != experiment_id(ExperimentConfig(proxies="curvature"))


def test_the_printed_recipe_says_when_augmentation_cannot_apply() -> None:
    """`--preset paper` on 8x8 digits printed "augmentation on", but the engine crops and flips only
    images at least 16 pixels wide (harness.training.augmenting): nothing was augmented."""
    paper = experiment_config(preset="paper")
    assert preset_note(paper).endswith("augmentation on")
    assert "augmentation on, not applied to these inputs" in preset_note(paper, (1, 8, 8))
    assert preset_note(paper, (3, 32, 32)).endswith("augmentation on")


def test_augmenting_mnist_warns_that_mirrored_digits_change_class() -> None:
    import torch

    from harness.datasets import Dataset

    digits = Dataset(name="mnist", x_train=torch.zeros(4, 1, 28, 28, dtype=torch.uint8),
                     y_train=torch.tensor([0, 1, 0, 1]), x_test=torch.zeros(0, 1, 28, 28, dtype=torch.uint8),
                     y_test=torch.zeros(0, dtype=torch.int64), classes=("0", "1"), full_train_size=4)
    cfg = experiment_config(preset="paper", dataset="mnist")
    with pytest.warns(UserWarning, match="mirrors MNIST digits.*--augment off"):
        cfg.validate_for_data(digits, ["mlp"], 1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        experiment_config(dataset="mnist").validate_for_data(digits, ["mlp"], 1)  # quick preset: no augmentation


@pytest.mark.parametrize(("argv", "message"), [
    (["run", "--seed", "1"], r"unrecognized arguments: --seed 1 \(did you mean --seeds\?\); see `python -m harness "
                             r"run --help`"),
    (["run", "--epoch=3"], r"did you mean --epochs\?"),
    (["run", "--bogus=1", "--epoch", "3"], r"--bogus=1 --epoch 3 \(--epoch: did you mean --epochs\?\);"),
    (["run", "--proxy", "csl"], r"did you mean --proxy-arg or --proxies\?"),
    (["list", "--x"], r"see `python -m harness list --help`"),
    (["run", "--tasks", "mislabelled"], r"unknown task\(s\) \['mislabelled'\] \(did you mean 'mislabeled'\?\)"),
])
def test_a_mistyped_flag_or_task_names_the_closest_and_the_right_help(argv, message, capsys) -> None:
    """Before: `--seed 1` pointed at `python -m harness --help` (which lists no run flag) and
    `--tasks mislabelled` got no suggestion, where proxies did."""
    assert main(argv) == 2
    assert re.search(message, capsys.readouterr().err)


def test_warnings_are_one_line_each_and_said_once(monkeypatch, capsys) -> None:
    """Before: Python's `path:line: UserWarning: ...` plus a line of memprox's source, and an image
    folder's warning twice (planning, then loading, warn from two places)."""
    import warnings

    from harness import cli

    def run_warning_twice(args) -> int:
        for _ in range(2):
            warnings.warn("3 files are not images; they are skipped", UserWarning, stacklevel=1)
        warnings.warn("another", RuntimeWarning, stacklevel=1)
        return 0

    monkeypatch.setattr(cli, "cmd_run", run_warning_twice)
    assert main(["run"]) == 0
    assert capsys.readouterr().err.splitlines() == ["warning: 3 files are not images; they are skipped",
                                                    "warning: another"]
