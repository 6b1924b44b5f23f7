"""Where a run store may go: `--store ~` or `--store .` in a project was accepted, and the store
then put runs/, partial/ and locks/ among the user's files. A folder that is no store yet and holds
other files, and the home folder, are refused before anything trains; nothing is made there."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.api import experiment_config
from harness.errors import HarnessError
from harness.experiment import Experiment

QUICK = dict(tasks="mislabeled", noise_rates=0.1, proxies="csl", seeds=1, progress=False)


def _experiment(store: Path, out: Path) -> Experiment:
    return Experiment(experiment_config(store=store, out=out, **QUICK))


def test_a_folder_of_other_files_is_refused_as_a_store(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / "src").mkdir(parents=True)
    (project / "README.md").write_text("mine")
    with pytest.raises(HarnessError, match=r"--store .*project is a folder of other files \(README.md, src\), not a "
                                           r"run store: .*pass a new or empty folder, or an existing store"):
        _experiment(project, tmp_path / "out")
    assert sorted(p.name for p in project.iterdir()) == ["README.md", "src"]


def test_the_home_folder_is_refused_as_a_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bashrc").write_text("")  # hidden files only: still someone's home
    monkeypatch.setenv("HOME", str(home))
    with pytest.raises(HarnessError, match="is the home folder"):
        _experiment(home, tmp_path / "out")
    assert [p.name for p in home.iterdir()] == [".bashrc"]


@pytest.mark.parametrize("layout", ["new", "empty", "hidden-only", "existing-store"])
def test_new_empty_and_existing_stores_are_accepted(tmp_path: Path, layout: str) -> None:
    store = tmp_path / "store"
    if layout != "new":
        store.mkdir()
    if layout == "hidden-only":
        (store / ".DS_Store").write_text("")
    if layout == "existing-store":
        (store / "runs").mkdir()
        (store / "notes.txt").write_text("a store a user wrote a note into stays usable")
    _experiment(store, tmp_path / "out")  # planning passed the store checks


def test_a_store_already_in_the_home_folder_stays_usable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs stored there before the check are not cut off: nothing new is scattered by using them."""
    home = tmp_path / "home"
    (home / "runs").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    _experiment(home, tmp_path / "out")
