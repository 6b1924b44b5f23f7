"""review31b: inputs today's changes turned into tracebacks or left unhandled, each checked by value."""

from __future__ import annotations

import importlib.metadata
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.datasets import load_dataset
from harness.errors import HarnessError


def _save(tmp_path: Path, **arrays: np.ndarray) -> str:
    path = tmp_path / "mine.npz"
    np.savez(path, **arrays)
    return f"npz:{path}"


def test_an_empty_test_split_saved_as_np_array_of_nothing_loads(tmp_path: Path) -> None:
    """`y_test=np.array([])` (float64, numpy's default) beside an empty x_test: the whole-number advice of
    today (`number_label_fix`) took `np.unique(y).min()` of no values, a ValueError traceback; an empty
    test split is no test split, and its labels' dtype names no mistake."""
    x = np.random.default_rng(0).normal(size=(30, 3))
    y = np.arange(30) % 3
    ds = load_dataset(_save(tmp_path, x=x, y=y, x_test=x[:0], y_test=np.array([])))
    assert len(ds.x_test) == 0 and len(ds.y_test) == 0
    assert np.asarray(ds.y_test).dtype == np.int64
    assert list(ds.classes) == ["0", "1", "2"]
    assert np.array_equal(np.asarray(ds.y_train), y)


def test_a_dataset_plugin_that_exits_at_import_is_named(monkeypatch, tmp_path: Path) -> None:
    """The executor plugins' fix of today (a `sys.exit()` at import named in one line) was not made for the
    dataset plugins: `--dataset exiting:...` ended memprox with the plugin's status (0 for `sys.exit()`,
    a run that did nothing and said nothing)."""
    import harness.datasets.base as base

    (tmp_path / "exiting_dataset31b.py").write_text("import sys\nsys.exit(0)\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "exiting_dataset31b", raising=False)
    ep = importlib.metadata.EntryPoint("exiting31b", "exiting_dataset31b:load", base.ENTRY_POINT_GROUP)
    monkeypatch.setattr(base, "_entry_points", lambda: {"exiting31b": ep})
    with pytest.raises(HarnessError, match=r"dataset plugin 'exiting31b' \(exiting_dataset31b:load\) exited while "
                                           r"imported \(SystemExit: 0; .*: a module must not run a script when "
                                           r"imported"):
        base._load_plugin("exiting31b")


NAMES = np.array(["ant", "bee", "cat"])


@pytest.mark.parametrize("dtype", [np.int64, np.float64])
def test_negative_ids_beside_classes_are_told_a_fix_that_keeps_the_names(tmp_path: Path, dtype) -> None:
    """-1 ("unlabelled") among ids into `classes`: the advice was np.unique's remap with
    `classes=np.unique(y).astype(str)`, which, followed, loaded classes "-1", "0", "1", "2": the file's names
    gone and every sample's label_name shifted (an ant named "0"). Followed now, the names stay."""
    rng = np.random.default_rng(31)
    x, y = rng.normal(size=(30, 3)), np.arange(30) % 3
    y_given = np.where(np.arange(30) % 10 == 9, -1, y).astype(dtype)  # rows 9, 19, 29 unlabelled
    with pytest.raises(HarnessError) as caught:
        load_dataset(_save(tmp_path, x=x, y=y_given, classes=NAMES))
    said = str(caught.value)
    assert "np.unique" not in said
    assert "keep = y >= 0, then save x=x[keep] and y=y[keep]" in said
    keep = y_given >= 0  # the advice, followed literally
    fixed = load_dataset(_save(tmp_path, x=x[keep], y=y_given[keep].astype(np.int64), classes=NAMES))
    assert list(fixed.classes) == ["ant", "bee", "cat"]
    assert np.asarray(fixed.classes)[fixed.y_train.numpy()].tolist() == NAMES[y[keep]].tolist()
    assert len(fixed.y_train) == 27


def test_negative_test_ids_beside_classes_name_the_test_arrays(tmp_path: Path) -> None:
    rng = np.random.default_rng(31)
    x, y = rng.normal(size=(30, 3)), np.arange(30) % 3
    with pytest.raises(HarnessError, match=r"y_test has negative class id -1; .*keep = y_test >= 0, then save "
                                           r"x_test=x_test\[keep\] and y_test=y_test\[keep\]"):
        load_dataset(_save(tmp_path, x=x, y=y, x_test=x[:4], y_test=np.array([0, -1, 2, 1]), classes=NAMES))


class _ClosedOs:
    """`os` as another user sees a folder `closed` of mode 0700: stat below it is refused, it cannot be entered."""

    def __init__(self, closed: Path) -> None:
        import os

        self._os, self._closed = os, str(closed)

    def __getattr__(self, name: str):
        return getattr(self._os, name)

    def stat(self, path, *args, **kwargs):
        if str(path).startswith(self._closed + "/"):
            raise PermissionError(13, "Permission denied", str(path))
        return self._os.stat(path, *args, **kwargs)

    def access(self, path, mode, *args, **kwargs) -> bool:
        return str(path) != self._closed and self._os.access(path, mode, *args, **kwargs)


@pytest.mark.parametrize("from_env", [True, False])
def test_a_closed_store_from_memprox_cache_is_named_by_the_variable(monkeypatch, tmp_path: Path,
                                                                   from_env: bool) -> None:
    """`store info` / `store prune` with no --store, MEMPROX_CACHE in a folder this user may not enter: the
    error said "--store ... pass another --store" to a user who passed none (`run` named the variable)."""
    import harness.store_place as store_place
    from harness.store_scan import is_store

    closed = tmp_path / "closed"
    root = closed / "cache" / "store"
    monkeypatch.setenv("MEMPROX_CACHE", str(closed / "cache") if from_env else str(tmp_path / "elsewhere"))
    monkeypatch.setattr(store_place, "os", _ClosedOs(closed))
    with pytest.raises(HarnessError) as caught:
        is_store(root)
    said = str(caught.value)
    if from_env:
        assert said == (f"the run store {root} (from MEMPROX_CACHE={closed / 'cache'}) cannot be reached: this user "
                        f"may not enter {closed} (Permission denied); set MEMPROX_CACHE to another folder or pass "
                        f"--store (in a folder you may enter)")
    else:
        assert said == (f"--store {root} cannot be reached: this user may not enter {closed} (Permission denied); "
                        f"pass another --store (in a folder you may enter)")


def test_an_executor_plugin_that_exits_at_import_is_told_the_fix(monkeypatch, tmp_path: Path) -> None:
    """Named since today, but with no fix (the proxy and task plugins' message gives it)."""
    import harness.executors as executors

    (tmp_path / "exiting_executor31b.py").write_text("import sys\nsys.exit(3)\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "exiting_executor31b", raising=False)
    ep = importlib.metadata.EntryPoint("exiting31b", "exiting_executor31b:Exec", executors.ENTRY_POINT_GROUP)
    with pytest.raises(HarnessError) as caught:
        executors._load_plugin(ep)
    assert str(caught.value) == ("executor plugin 'exiting31b' (exiting_executor31b:Exec) exited while imported "
                                 "(SystemExit: 3; any lines just above are its own, e.g. argparse's usage): a module "
                                 "must not run a script when imported; put that code under "
                                 "`if __name__ == \"__main__\":`")


def test_repeated_test_file_names_are_warned_about_with_the_test_splits_columns(tmp_path: Path) -> None:
    """`files_test` names test samples, which no suspects CSV lists by `file`/`index`: the warning sent the
    reader to the training split's columns (the row of x) for rows of x_test."""
    rng = np.random.default_rng(31)
    x, y = rng.normal(size=(30, 3)), np.arange(30) % 3
    files_test = np.array(["t0", "t1", "t0", "t3"])
    spec = _save(tmp_path, x=x, y=y, x_test=x[:4], y_test=y[:4], files_test=files_test,
                 files=np.array([f"r{i}" for i in range(30)]))
    with pytest.warns(UserWarning) as caught:
        load_dataset(spec)
    said = [str(w.message) for w in caught if "already used" in str(w.message)]
    assert said == [f"{spec}: files_test names 1 sample(s) with a name already used (first: 't0', rows 0 and 2): "
                    "train_test_duplicates.csv's file_test column cannot tell them apart, use test (the row of x_test) "
                    "for those, or save files_test with one distinct name per sample"]
