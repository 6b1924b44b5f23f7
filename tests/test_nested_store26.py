"""`--store <store>/partial` (or any folder inside a run store) made a second store there: the outer
store counted its runs as other files, which none of its commands reads or prunes (cli26's finding)."""

from __future__ import annotations

import pytest

from harness.errors import HarnessError
from harness.store_place import check_place


def _store(root):
    for sub in ("runs", "partial", "locks"):
        (root / sub).mkdir(parents=True)
    return root


def test_a_new_store_inside_a_run_store_is_refused_naming_the_store(tmp_path) -> None:
    outer = _store(tmp_path / "store")
    with pytest.raises(HarnessError, match=r"is partial/ of the run store .*store: .*pass --store .*store, or a "
                                           r"folder outside it"):
        check_place(outer / "partial")
    with pytest.raises(HarnessError, match=r"is partial/deep/ of the run store"):
        check_place(outer / "partial" / "deep")


def test_the_store_itself_and_a_folder_beside_a_tensorboard_runs_folder_are_fine(tmp_path) -> None:
    check_place(_store(tmp_path / "store"))  # an existing store stays usable
    (tmp_path / "project" / "runs").mkdir(parents=True)  # another tool's runs/, no partial/ or locks/
    check_place(tmp_path / "project" / "memprox_store")
    check_place(tmp_path / "fresh")
