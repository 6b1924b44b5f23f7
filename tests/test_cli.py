"""The CLI: bad input exits 2 with one `error:` line and writes nothing; `list` and `--help`."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.errors import Interrupted, StorageError
from proxies import available_proxies

ROOT = Path(__file__).resolve().parents[1]


def _run(tmp_path: Path, *args: str, out: Path | None = None) -> list[str]:
    """A tiny experiment; a flag in `args` replaces the default one (flags may not repeat), and
    --noisy-labels replaces --noise-rates."""
    out = out or tmp_path / "out"
    flags = {"--seeds": "1", "--noise-rates": "0.1", "--tasks": "mislabeled", "--proxies": "csl", "--epochs": "1",
             "--device": "cpu", "--out": str(out), "--store": str(tmp_path / "store")}
    if "--noisy-labels" in args:
        del flags["--noise-rates"]
    rest = list(args)
    for i, arg in enumerate(args):
        if arg in flags and i + 1 < len(args):
            flags[arg] = args[i + 1]
            rest[i:i + 2] = [None, None]
    return ["run", "--no-progress", *[x for kv in flags.items() for x in kv], *[a for a in rest if a is not None]]


def _bad_input(tmp_path: Path, capsys, *args: str, out: Path | None = None) -> str:
    """Run the CLI, expect exit 2 with exactly one `error:` line and no leaderboard; return that line."""
    code = main(_run(tmp_path, *args, out=out))
    captured = capsys.readouterr()
    assert code == 2, captured.err
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, captured.err
    assert captured.out == ""
    assert not list(tmp_path.rglob("leaderboard.csv"))
    assert not (tmp_path / "store" / "runs").exists() or not any((tmp_path / "store" / "runs").iterdir())
    return errors[0]


def test_unknown_proxy_lists_the_valid_ones(tmp_path, capsys) -> None:
    line = _bad_input(tmp_path, capsys, "--proxies", "csl,nope")
    assert "'nope'" in line
    for name in ("csl", "aum", "el2n", "forgetting", "in_confidence"):
        assert name in line


def test_unknown_dataset(tmp_path, capsys) -> None:
    line = _bad_input(tmp_path, capsys, "--dataset", "imagenet-42")
    assert "imagenet-42" in line and "digits" in line and "cifar10" in line


def test_unknown_model(tmp_path, capsys) -> None:
    line = _bad_input(tmp_path, capsys, "--model", "transformer9000")
    assert "transformer9000" in line and "mlp" in line


def test_unknown_task(tmp_path, capsys) -> None:
    line = _bad_input(tmp_path, capsys, "--tasks", "mislabeled,sorting")
    assert "sorting" in line and "mislabeled" in line and "duplicates" in line


@pytest.mark.parametrize("rate", ["1.5", "-0.1", "1.0", "0"])
def test_noise_rate_outside_unit_interval(tmp_path, capsys, rate: str) -> None:
    line = _bad_input(tmp_path, capsys, "--noise-rates", f"0.1,{rate}")
    assert "(0, 1)" in line


def test_malformed_noise_rates_and_seeds(tmp_path, capsys) -> None:
    assert "numbers" in _bad_input(tmp_path, capsys, "--noise-rates", "0.1,lots")
    assert "--seeds" in _bad_input(tmp_path, capsys, "--seeds", "three")


def test_missing_cifar10_root_without_download(tmp_path, capsys) -> None:
    empty = tmp_path / "no-data-here"
    empty.mkdir()
    line = _bad_input(tmp_path, capsys, "--dataset", "cifar10", "--data-root", str(empty))
    assert "cifar10" in line and str(empty) in line and "--download" in line


def test_label_file_of_wrong_length(tmp_path, capsys) -> None:
    labels = tmp_path / "labels.npy"
    np.save(labels, np.zeros(10, dtype=np.int64))
    line = _bad_input(tmp_path, capsys, "--noisy-labels", str(labels))
    assert "10" in line and "1437" in line


def test_missing_label_file(tmp_path, capsys) -> None:
    line = _bad_input(tmp_path, capsys, "--noisy-labels", str(tmp_path / "absent.npy"))
    assert "absent.npy" in line


def test_unwritable_output_directory(tmp_path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        try:  # root (and some CI sandboxes) can write into a 0o500 folder anyway
            (locked / "probe").write_text("")
        except OSError:
            pass
        else:
            pytest.skip("running with privileges that ignore directory permissions")
        line = _bad_input(tmp_path, capsys, out=locked / "out")
        assert "not writable" in line and "--out" in line
    finally:
        locked.chmod(0o700)


def test_output_path_that_is_a_file(tmp_path, capsys) -> None:
    """Unwritable even as root: --out names an existing file."""
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    line = _bad_input(tmp_path, capsys, out=blocker / "out")
    assert "not writable" in line and "--out" in line


@pytest.mark.parametrize(
    "arg, needle",
    [
        ("csl", "NAME.PARAM=VALUE"),  # no dot, no value
        ("csl.window", "NAME.PARAM=VALUE"),  # no value
        ("csl.window=0.2", "no parameter"),  # csl has no parameters
        ("aum.x=1", "not among the selected"),  # names a proxy that is not selected
    ],
)
def test_bad_proxy_arg(tmp_path, capsys, arg: str, needle: str) -> None:
    assert needle in _bad_input(tmp_path, capsys, "--proxy-arg", arg)


def test_bad_recipe_values(tmp_path, capsys) -> None:
    assert "epochs" in _bad_input(tmp_path, capsys, "--epochs", "0")
    assert "learning rate" in _bad_input(tmp_path, capsys, "--lr", "-1")
    assert "batch size" in _bad_input(tmp_path, capsys, "--batch-size", "0")


def test_list_prints_every_proxy_with_its_citation() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-m", "harness", "list"], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    proxies = available_proxies()
    assert proxies
    for name, cls in proxies.items():
        rows = [line for line in lines if line.split() and line.split()[0] == name]
        assert rows, f"{name} missing from `list`"
        assert cls.citation in rows[0], f"{name}: citation missing"
    for section in ("Datasets:", "Models:", "Tasks (parameters", "Presets:"):
        assert section in done.stdout
    from harness.presets import PRESETS

    presets = done.stdout.split("Presets:")[1].splitlines()
    for name, entry in PRESETS.items():
        assert any(line.startswith(f"{name} ") and entry.description in line for line in presets), name


def test_help_mentions_every_flag(capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for flag in ("--proxies", "--tasks", "--dataset", "--data-root", "--download", "--subset", "--preset",
                 "--model", "--epochs", "--batch-size", "--lr", "--augment", "--seeds", "--noise-rates",
                 "--duplicate-pairs", "--noisy-labels", "--proxy-arg", "--task-arg", "--reference", "--device",
                 "--out", "--store", "--checkpoint-every", "--threads", "--no-progress", "--executor", "--workers",
                 "--ray-address", "--gpus-per-run", "--bootstrap", "--overwrite", "--precision", "--compile"):
        assert flag in text, flag


def test_a_good_run_exits_0(tmp_path, capsys) -> None:
    code = main(_run(tmp_path))
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "error:" not in captured.err
    assert "### mislabeled: auroc" in captured.out
    assert (tmp_path / "out" / "leaderboard.csv").exists()


@pytest.mark.parametrize(
    "error, code, needle",
    [
        (StorageError("cannot write /x/raw.csv: No space left on device"), 1,
         "error: cannot write /x/raw.csv: No space left on device"),
        (Interrupted(3), 130, "interrupted; 3 runs kept in the store, rerun to resume"),
        (KeyboardInterrupt(), 130, "interrupted; runs that finished are kept in the store"),
    ],
)
def test_exit_codes_after_the_plan(tmp_path, capsys, monkeypatch, error: BaseException, code: int,
                                   needle: str) -> None:
    """A failed write (1), Ctrl-C in the experiment (130): one line, no traceback."""
    from harness.experiment import Experiment

    def fail(self):
        raise error

    monkeypatch.setattr(Experiment, "run", fail)
    assert main(_run(tmp_path)) == code
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if not line.startswith("memprox: ")]
    assert len(lines) == 1 and lines[0].startswith(needle), captured.err
    assert "Traceback" not in captured.err


def test_ctrl_c_before_the_experiment_starts(tmp_path, capsys, monkeypatch) -> None:
    from harness.experiment import Experiment

    def interrupted(self, *args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Experiment, "__init__", interrupted)
    assert main(_run(tmp_path)) == 130
    assert capsys.readouterr().err.strip().startswith("interrupted")


def test_no_command_is_one_error_line(capsys) -> None:
    assert main([]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "command" in err[0]


def test_the_help_of_dataset_names_every_built_in_dataset() -> None:
    """`run --help` and `list` say the same (the help lacked hf:PATH)."""
    from harness.datasets import dataset_names
    from harness.options import OPTIONS

    (dataset,) = [o for o in OPTIONS if o.name == "dataset"]
    assert all(name in dataset.help for name in dataset_names())
