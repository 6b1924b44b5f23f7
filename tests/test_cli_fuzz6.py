"""What fuzzing the command line found: inputs that were accepted silently or refused with a message
that named neither the value nor the fix. Each test fails before anything trains (or loads data)."""

from __future__ import annotations

import warnings

import pytest

from harness.api import experiment_config
from harness.cli import main
from harness.errors import HarnessError
from harness.values import parse_key_values

MISLABELED = dict(tasks="mislabeled", noise_rates=0.1, proxies="csl")


def _error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]


# --task-arg / --proxy-arg NAME.PARAM= with no value ---------------------------------------------------
@pytest.mark.parametrize("item", ["suspects.by=", "suspects.by=  ", "curvature.n="])
def test_a_parameter_given_no_value_is_refused(item: str) -> None:
    """`--task-arg suspects.by=` (an unset shell variable) was the empty string, which the task
    takes as its default: the experiment ran as if the argument had not been given."""
    with pytest.raises(HarnessError, match=r"gives \w+\.\w+ no value"):
        parse_key_values([item], "--task-arg")


def test_the_cli_refuses_an_empty_task_arg_value(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--tasks", "suspects", "--proxies", "csl", "--task-arg", "suspects.by="]) == 2
    assert _error_lines(capsys) == ["error: --task-arg 'suspects.by=' gives suspects.by no value; pass "
                                    "NAME.PARAM=VALUE, or drop the argument for the default"]


def test_a_quoted_empty_string_is_still_a_value() -> None:
    """Only a missing value is refused: `suspects.by=''` says the empty string on purpose."""
    assert parse_key_values(["suspects.by=''"], "--task-arg") == {"suspects": {"by": ""}}


# --lr -1e-3: argparse reads the value as a flag ---------------------------------------------------------
def test_a_negative_value_after_its_flag_names_the_fix(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse said only "expected one argument" for `--lr -1e-3` (a number it does not take for a
    negative one, so it reads it as a flag): the message now says how to pass it."""
    assert main(["run", "--tasks", "mislabeled", "--lr", "-1e-3"]) == 2
    (line,) = _error_lines(capsys)
    assert "(argparse reads '-1e-3' as a flag: write --lr=-1e-3)" in line
    assert main(["run", "--tasks", "mislabeled", "--lr=-1e-3"]) == 2  # written so, the value itself is refused
    assert _error_lines(capsys) == ["error: learning rate must be a finite number > 0 (got -0.001); fix --lr"]


def test_a_flag_missing_its_value_at_the_end_gets_no_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--tasks", "mislabeled", "--lr"]) == 2
    assert _error_lines(capsys) == ["error: argument --lr: expected one argument; see `python -m harness run "
                                    "--help`"]


# --lr below float32's range -----------------------------------------------------------------------------
@pytest.mark.parametrize("lr", [1e-320, 5e-324, 1e-39])
def test_a_learning_rate_float32_cannot_hold_is_refused(lr: float) -> None:
    """`--lr 1e-320` passed the "> 0" check and trained nothing: in float32 the step is 0 (or
    denormal), so every run stayed at its initialisation."""
    with pytest.raises(HarnessError, match=r"learning rate must be at least 1\.2e-38 .*fix lr"):
        experiment_config(lr=lr, **MISLABELED)


def test_a_small_but_representable_learning_rate_is_kept() -> None:
    assert experiment_config(lr=1e-30, **MISLABELED).recipe.lr == 1e-30


# --download / --data-root with a dataset that reads neither -------------------------------------------------
@pytest.mark.parametrize(("options", "said"), [
    ({"download": True}, "download=True has no effect on dataset='digits', which is bundled"),
    ({"data_root": "/tmp/somewhere"}, "data_root has no effect on dataset='digits'"),
    ({"download": True, "dataset": "npz:/no/such.npz"},
     "download=True has no effect on dataset='npz', which is read from its own PATH"),
])
def test_data_options_a_dataset_ignores_are_not_ignored_silently(options: dict, said: str) -> None:
    """Only torchvision's loaders read --data-root and --download; with digits, npz, imagefolder or
    hf they were accepted without a word, as if the data had come from there. (From the API, the
    warning names keywords.)"""
    with pytest.warns(UserWarning, match=said):
        experiment_config(**options, **MISLABELED)


def test_torchvision_datasets_and_the_defaults_say_nothing() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        experiment_config(**MISLABELED)
        experiment_config(dataset="cifar10", download=True, data_root="/tmp/somewhere", **MISLABELED)


def test_the_cli_prints_the_warning_once_before_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--tasks", "mislabeled", "--download", "--proxies", "no_such_proxy"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("warning: --download has no effect on --dataset digits")
    assert len(err) == 2 and err[1].startswith("error: unknown proxy 'no_such_proxy'")


# `run -- --epochs 2` --------------------------------------------------------------------------------------
def test_flags_after_a_double_dash_are_explained(capsys: pytest.CaptureFixture[str]) -> None:
    """argparse leaves everything after `--` unread, and the hint then suggested the very flag given
    ("--epochs: did you mean --epochs?")."""
    assert main(["run", "--tasks", "mislabeled", "--", "--epochs", "2"]) == 2
    assert _error_lines(capsys) == ["error: unrecognized arguments: -- --epochs 2 (nothing after '--' is read as a "
                                    "flag: drop the '--'); see `python -m harness run --help`"]
    assert main(["run", "--tasks", "mislabeled", "--seed", "1"]) == 2  # a real typo keeps its hint
    assert _error_lines(capsys) == ["error: unrecognized arguments: --seed 1 (did you mean --seeds?); see "
                                    "`python -m harness run --help`"]


# --augment on where the engine cannot augment ------------------------------------------------------------
def test_augmentation_that_cannot_apply_is_said_before_training() -> None:
    """`--augment on` (or `--preset paper`) on 8x8 digits trained the plain samples, and said so only
    in the accuracy line after training; now planning warns before the first run trains."""
    import torch

    from harness.datasets import Dataset

    def images(width: int) -> Dataset:
        return Dataset(name="x", x_train=torch.zeros(4, 1, width, width), y_train=torch.tensor([0, 1, 0, 1]),
                       x_test=torch.zeros(0, 1, width, width), y_test=torch.zeros(0, dtype=torch.int64),
                       classes=("0", "1"), full_train_size=4)

    cfg = experiment_config(augment="on", epochs=2, **MISLABELED)
    with pytest.warns(UserWarning, match=r"no effect on the 1x8x8 samples of digits: .*pass --augment off"):
        cfg.validate_for_data(images(8), ["mlp"], 1)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg.validate_for_data(images(16), ["mlp"], 1)  # wide enough: augmented
        experiment_config(epochs=2, **MISLABELED).validate_for_data(images(8), ["mlp"], 1)  # off: nothing to say
