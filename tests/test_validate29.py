"""validate29: inputs the command line took silently, or refused without naming the fix.

- an abbreviated flag (`--noise 0.1`, `--dup 3`, `store prune --dry`) was "unrecognized" with no
  hint: argparse's prefix matching is off on purpose, so the message names the flag it abbreviates;
- argparse's value errors (`--epochs 1.5`, `--download=yes`) named the value, not what the flag
  takes;
- an empty item in a comma list (`--seeds 0,,5`, `--noise-rates 0.1,,0.2`, `--tasks a,,b`; an unset
  shell variable) was dropped and the experiment ran with a value fewer (`--proxies csl,,aum` was
  refused already).

Each refusal is exit 2 with one `error:` line, before anything trains: the --store stays absent.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.api import experiment_config
from harness.cli import main
from harness.errors import HarnessError

SMALL = ["--subset", "100", "--epochs", "1", "--proxies", "csl", "--executor", "inprocess", "--no-progress",
         "--bootstrap", "0"]


def _refused(argv: list[str], tmp_path: Path, capsys: pytest.CaptureFixture[str], command: str = "run") -> str:
    """Run `argv`; assert exit 2, one error line, no traceback and no store made; return the line."""
    store = tmp_path / "store"
    extra = ["--store", str(store), "--out", str(tmp_path / "out")] if command == "run" else []
    assert main([command, *extra, *argv]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert not store.exists()
    return lines[0]


# abbreviated flags ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "meant"), [("--noise", "--noise-rates"), ("--dup", "--duplicate-pairs"),
                                              ("--gpus", "--gpus-per-run"), ("--batch", "--batch-size")])
def test_an_abbreviated_flag_names_the_flag(given: str, meant: str, tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused([*SMALL, given, "3"], tmp_path, capsys)
    assert line == (f"error: unrecognized arguments: {given} 3 (did you mean {meant}? flags are not abbreviated, "
                    "write it whole); see `python -m harness run --help`")


def test_an_abbreviation_of_several_flags_names_each(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused([*SMALL, "--no", "1"], tmp_path, capsys)
    assert "(did you mean --noise-rates or --noisy-labels or --no-progress? flags are not abbreviated" in line


def test_store_prune_abbreviation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused(["prune", "--store", str(tmp_path / "store"), "--dry", "--all"], tmp_path, capsys, "store")
    assert line == ("error: unrecognized arguments: --dry (did you mean --dry-run? flags are not abbreviated, write "
                    "it whole); see `python -m harness store prune --help`")


def test_close_spellings_keep_their_hint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelling is named as before (no abbreviation note), and a flag nothing resembles gets no hint."""
    assert _refused([*SMALL, "--seed", "1"], tmp_path, capsys) == (
        "error: unrecognized arguments: --seed 1 (did you mean --seeds?); see `python -m harness run --help`")
    assert _refused([*SMALL, "--x", "1"], tmp_path, capsys) == (
        "error: unrecognized arguments: --x 1; see `python -m harness run --help`")


# argparse's value errors -----------------------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "hint"), [
    (["--epochs", "1.5"], "argument --epochs: invalid int value: '1.5' (--epochs takes a whole number, e.g. "
                          "--epochs 3)"),
    (["--bootstrap", "1e3"], "(--bootstrap takes a whole number, e.g. --bootstrap 3)"),
    (["--download=yes"], "argument --download: ignored explicit argument 'yes' (--download takes no value: pass "
                         "--download alone, or leave it out)"),
])
def test_a_value_error_says_what_the_flag_takes(argv: list[str], hint: str, tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused([*SMALL, *argv], tmp_path, capsys)
    assert hint in line
    assert line.endswith("; see `python -m harness run --help`")


# empty items in comma lists -------------------------------------------------------------------------------
@pytest.mark.parametrize(("flag", "value", "example"), [
    ("--seeds", "0,,5", "0,5"), ("--seeds", ",5", "0,5"), ("--seeds", "0, ,5", "0,5"),
    ("--noise-rates", "0.1,,0.2", "0.01,0.1"), ("--tasks", "mislabeled,,duplicates", "mislabeled,duplicates"),
    ("--tasks", ",mislabeled", "mislabeled,duplicates"),
])
def test_an_empty_list_item_is_refused(flag: str, value: str, example: str, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    base = [*SMALL] + ([] if flag == "--tasks" else ["--tasks", "mislabeled"])
    line = _refused([*base, flag, value], tmp_path, capsys)
    assert line == (f"error: {flag} {value!r} has an empty item between commas (a value lost, e.g. an unset shell "
                    f"variable?); list the values with one comma between each, e.g. {flag} {example}")


def test_the_api_refuses_an_empty_item_too() -> None:
    """In the API's words (`harness.api_wording`): the keyword, not the flag."""
    with pytest.raises(HarnessError, match=r"^seeds='0,,5' has an empty item .* e\.g\. seeds='0,5'$"):
        experiment_config(seeds="0,,5", tasks="mislabeled", proxies="csl")
    with pytest.raises(HarnessError, match=r"^noise_rates='0.1,,0.2' has an empty item"):
        experiment_config(noise_rates="0.1,,0.2", tasks="mislabeled", proxies="csl")


def test_a_trailing_comma_stays_a_list() -> None:
    """`--seeds 5,` is seed 5 alone (`--seeds 5` is five seeds); a trailing comma elsewhere is harmless."""
    cfg = experiment_config(seeds="5,", tasks="mislabeled,", noise_rates="0.1,", proxies="csl")
    assert cfg.seeds == (5,)
    assert cfg.tasks == ("mislabeled",)
    assert cfg.noise_rates == (0.1,)
    assert experiment_config(seeds="0,5", tasks="mislabeled", proxies="csl").seeds == (0, 5)
    assert experiment_config(seeds="3", tasks="mislabeled", proxies="csl").seeds == (0, 1, 2)


# --augment-epochs past --epochs ------------------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "epochs"), [(["--preset", "paper", "--augment-epochs", "300"], 1),
                                             (["--augment", "on", "--epochs", "2", "--augment-epochs", "3"], 2)])
def test_augment_epochs_past_the_end_names_both_flags(argv: list[str], epochs: int, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    """Was "augment epochs must be in [0, epochs=1] (got 300)": no flag, no fix."""
    given = argv[-1]
    small = [a for a in SMALL if a not in ("--epochs", "1")] + ([] if "--epochs" in argv else ["--epochs", "1"])
    line = _refused([*small, "--tasks", "mislabeled", *argv], tmp_path, capsys)
    assert line == (f"error: --augment-epochs {given} must be in [0, {epochs}], the training epochs (--epochs or "
                    f"the preset's); pass --augment-epochs {epochs} or less, or more --epochs")


def test_augment_epochs_with_augmentation_off_keeps_its_message(tmp_path: Path,
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused([*SMALL, "--tasks", "mislabeled", "--augment-epochs", "3"], tmp_path, capsys)
    assert line == "error: augment epochs (3) given with augmentation off; drop --augment-epochs or use --augment on"


# a missing command ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("argv", "line"), [
    ([], "error: the following arguments are required: command (pass one of: run, list, store); see `python -m "
         "harness --help`"),
    (["store"], "error: the following arguments are required: {info,prune} (pass one of: info, prune); see `python "
                "-m harness store --help`"),
])
def test_a_missing_command_names_the_commands(argv: list[str], line: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == 2
    assert [x for x in capsys.readouterr().err.splitlines() if x.startswith("error:")] == [line]


# an unknown preset names the closest ------------------------------------------------------------------------
@pytest.mark.parametrize(("given", "meant"), [("cpu_full", "cpu-full"), ("Quick", "quick"), ("papr", "paper")])
def test_an_unknown_preset_names_the_closest(given: str, meant: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    """Was "unknown preset 'cpu_full'; valid: ..." where an unknown proxy or task says which was meant."""
    line = _refused([*SMALL, "--tasks", "mislabeled", "--preset", given], tmp_path, capsys)
    assert line == (f"error: unknown preset {given!r} (did you mean {meant!r}?); valid: cpu-full, gpu, paper, quick "
                    "(see `python -m harness list`)")


def test_an_unknown_preset_far_from_any_lists_them() -> None:
    with pytest.raises(HarnessError, match=r"^unknown preset 'fast'; valid: cpu-full, gpu, paper, quick \(see"):
        experiment_config(preset="fast", tasks="mislabeled", proxies="csl")
