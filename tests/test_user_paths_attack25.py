"""Two careless inputs found by the attack25 session, each taken as written before:

- `SampleTracker.plot_suspects(path="~/figs/s.png")` wrote the grid to a folder named `~` in the
  working folder (a later `rm -rf ~` to clean it up removes the home folder); `~` is now expanded as
  in every other path memprox takes (`--out`, `--store`, ...).
- `store prune --label-contains " "` (a shell variable left empty inside quotes with a space)
  selected every entry, since every label holds a space; only an empty text was refused.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.cli import main
from harness.errors import HarnessError
from harness.store_report import selection_of
from harness.tracker import SampleTracker


def _tracker() -> SampleTracker:
    tracker = SampleTracker(3)
    tracker.update([0, 1, 2], logits=torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 0.0]]),
                   labels=torch.tensor([0, 0, 1]))
    tracker.end_epoch()
    return tracker


def test_plot_suspects_expands_the_home_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    written = _tracker().plot_suspects(np.zeros((3, 4, 4)), 2, path="~/figs/s.png")
    assert written == home / "figs" / "s.png"
    assert written.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list(work.iterdir()) == []  # no folder named ~ where the program ran


def test_plot_suspects_of_a_user_that_does_not_exist_is_one_error() -> None:
    with pytest.raises(HarnessError, match=r"^plot_suspects\(path=\.\.\.\) '~no_such_user_zq/s.png': .* without ~"):
        _tracker().plot_suspects(np.zeros((3, 4, 4)), 2, path="~no_such_user_zq/s.png")


@pytest.mark.parametrize("text", [" ", "  ", "\t"])
def test_label_contains_of_white_space_alone_selects_nothing(text: str) -> None:
    with pytest.raises(HarnessError, match="^--label-contains is white space alone, which every label holds; pass"):
        selection_of({"label_contains": text})
    with pytest.raises(HarnessError, match="^--label-contains is empty; pass some text"):
        selection_of({"label_contains": ""})
    assert selection_of({"label_contains": " seed1"})[0].label_contains == " seed1"  # text with a space is text


def test_prune_with_a_space_as_label_text_is_refused_and_removes_nothing(tmp_path: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "store"
    (store / "runs").mkdir(parents=True)
    (store / "runs" / "notes.txt").write_text("mine")
    assert main(["store", "prune", "--store", str(store), "--label-contains", " "]) == 2
    err = capsys.readouterr().err
    assert err.splitlines()[-1].startswith("error: --label-contains is white space alone")
    assert (store / "runs" / "notes.txt").read_text() == "mine"


def test_every_output_blocker_is_named_at_once(make_config, tmp_path: Path) -> None:
    """A file of the user's named `figures` and one named `suspects` in --out (with --overwrite) stand
    where the suspects task writes folders: the publish named the first alone, so the rerun after
    moving it failed again on the second, each time after the evaluation. Now both are named before
    training (the task declares its folders); the publish still names every blocker at once (a plugin
    task that declares none)."""
    from harness.errors import HarnessError, StorageError
    from harness.experiment import Experiment
    from harness.outputs import _check_places

    cfg = make_config(epochs=1, tasks=("suspects",), noise_rates=(), overwrite=True)
    cfg.out.mkdir()
    for name in ("figures", "suspects"):
        (cfg.out / name).write_text(f"my {name}")
    with pytest.raises(HarnessError) as info:
        Experiment(cfg)
    assert str(info.value) == (f"--out {cfg.out}: {cfg.out / 'figures'} is a file, where memprox writes its figures/; "
                               f"{cfg.out / 'suspects'} is a file, where memprox writes its suspects/; move them away "
                               "and rerun")
    assert not (tmp_path / "store").exists()  # refused before anything trained
    with pytest.raises(StorageError) as after:
        _check_places(cfg.out, ["figures/duplicates.png", "suspects/suspects.csv"], {}, True)
    assert f"in the way: {cfg.out / 'figures'}, {cfg.out / 'suspects'}; move each away" in str(after.value)
    assert sorted(p.name for p in cfg.out.iterdir()) == ["figures", "suspects"]  # nothing of theirs touched
    assert (cfg.out / "figures").read_text() == "my figures"
    moved = tmp_path / "moved"
    moved.mkdir()
    for name in ("figures", "suspects"):
        (cfg.out / name).rename(moved / name)
    Experiment(cfg).run()  # one move was enough
    assert (cfg.out / "suspects" / "suspects_seed0.csv").is_file()


def test_a_task_folders_name_blocks_only_when_that_task_is_selected(make_config) -> None:
    """A user's file named `suspects` in --out (with --overwrite) is in no one's way when the suspects
    task is not selected; `privacy`, for the privacy task, is."""
    from harness.errors import HarnessError
    from harness.experiment import Experiment
    from harness.tasks.base import TASKS

    assert {n: TASKS[n].folders for n in ("suspects", "privacy", "memorization", "theory", "mislabeled")} == {
        "suspects": ("suspects", "figures"), "privacy": ("privacy", "figures"), "memorization": ("memorization",),
        "theory": ("figures",), "mislabeled": ()}
    cfg = make_config(epochs=1, overwrite=True)
    cfg.out.mkdir()
    (cfg.out / "suspects").write_text("mine")
    Experiment(cfg).run()
    assert (cfg.out / "suspects").read_text() == "mine" and (cfg.out / "leaderboard.csv").is_file()
    (cfg.out / "privacy").write_text("mine too")
    with pytest.raises(HarnessError, match=r"privacy is a file, where memprox writes its privacy/; move it away"):
        Experiment(make_config(epochs=1, overwrite=True, tasks=("privacy",)))


def test_the_lightning_callbacks_plot_path_expands_home_when_made(monkeypatch, tmp_path: Path) -> None:
    """`CSLCallback(plot_path="~nosuchuser/s.png")` was accepted and failed only when training had ended;
    `~/s.png` is the home folder's, as every other path memprox takes."""
    pytest.importorskip("lightning")
    from harness.errors import HarnessError
    from harness.integrations.lightning import CSLCallback

    monkeypatch.setenv("HOME", str(tmp_path))
    images = np.zeros((3, 4, 4))
    assert CSLCallback(3, images=images, plot_path="~/s.png").plot_path == tmp_path / "s.png"
    with pytest.raises(HarnessError, match=r"CSLCallback\(plot_path=\.\.\.\) '~nosuchuser_zz/s\.png'"):
        CSLCallback(3, images=images, plot_path="~nosuchuser_zz/s.png")
