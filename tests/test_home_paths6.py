"""A path with `~user` of no such user (or `~` with no home folder) made `Path.expanduser` raise
RuntimeError, which ended the run in a traceback; each place a path comes in now names its flag or
variable and the fix, with exit code 2, before anything trains."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cli import main
from harness.errors import HarnessError
from harness.values import expand_home

NO_USER = "~no_such_user_zq/x"
BASE = ["run", "--proxies", "csl", "--seeds", "1", "--no-progress"]
RATES = ["--tasks", "mislabeled", "--noise-rates", "0.1"]


def _error(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return next(line for line in err.splitlines() if line.startswith("error:"))


def test_expand_home_names_where_the_path_came_from() -> None:
    assert expand_home("plain/x", "--out") == Path("plain/x")
    assert expand_home("~/x", "--out") == Path.home() / "x"
    with pytest.raises(HarnessError, match=r"^--store '~no_such_user_zq/x': .* pass a path without ~"):
        expand_home(NO_USER, "--store")


@pytest.mark.parametrize(("args", "where"), [
    (["--tasks", "mislabeled", "--noisy-labels", f"{NO_USER}.npy"], "--noisy-labels"),
    ([*RATES, "--dataset", f"npz:{NO_USER}.npz"], "--dataset npz:"),
    ([*RATES, "--dataset", f"imagefolder:{NO_USER}"], "--dataset imagefolder:"),
    ([*RATES, "--dataset", f"hf:{NO_USER}"], "--dataset hf:"),
    (["--tasks", "memorization", "--reference", f"fz:{NO_USER}.npz"], "--reference"),
    ([*RATES, "--dataset", "cifar10", "--data-root", NO_USER], "--data-root"),
])
def test_a_tilde_path_that_cannot_expand_is_one_error_line(args: list[str], where: str, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code = main([*BASE, "--out", str(tmp_path / "out"), "--store", str(tmp_path / "store"), *args])
    assert code == 2
    line = _error(capsys)
    assert line.startswith(f"error: {where}") and "pass a path without ~" in line
    assert not (tmp_path / "store").exists() and not (tmp_path / "out").exists()


def test_memprox_cache_that_cannot_expand_is_one_error_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MEMPROX_CACHE", NO_USER)
    assert main([*BASE, "--tasks", "mislabeled", "--noise-rates", "0.1", "--out", str(tmp_path / "out")]) == 2
    assert _error(capsys).startswith("error: MEMPROX_CACHE '~no_such_user_zq/x'")


def test_noisy_labels_as_class_names_or_one_hot_get_a_fix_that_works(tmp_path: Path) -> None:
    """Text labels were told `labels.astype(int)`, which fails on them; a one-hot array only heard
    its shape. Found by the own-data walk-through."""
    import numpy as np

    from harness.corruption import read_label_file

    names = tmp_path / "names.npy"
    np.save(names, np.array(["cat", "dog", "cat"]))
    with pytest.raises(HarnessError, match=r"are class names \(<U3\); .*classes.index\(c\)"):
        read_label_file(str(names), 3, 2)
    onehot = tmp_path / "onehot.npy"
    np.save(onehot, np.eye(2)[[0, 1, 0]])
    with pytest.raises(HarnessError, match=r"shape \(3, 2\); .*save labels.argmax\(1\)"):
        read_label_file(str(onehot), 3, 2)
