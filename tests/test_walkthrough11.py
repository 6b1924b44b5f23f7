"""What a docs walkthrough on an image folder (CIFAR-10 images, planted mislabels and copies) found
unclear in the CLI's own lines: a `suspects.by` that is no proxy at all was told to be added to
--proxies; the start line counted each setting once per seed; `duplicates=exact` was announced as
"copies and near copies"."""

from __future__ import annotations

from pathlib import Path

from harness.cli import main


def test_a_by_that_is_no_proxy_says_so_instead_of_asking_to_add_it(tmp_path: Path, capsys) -> None:
    store = tmp_path / "store"
    code = main(["run", "--tasks", "suspects", "--proxies", "csl", "--task-arg", "suspects.by=nosuch",
                 "--store", str(store), "--out", str(tmp_path / "out"), "--epochs", "1"])
    assert code == 2
    err = capsys.readouterr().err
    assert "suspects.by=nosuch is no proxy (memprox list shows them); pass one of the selected proxies: csl" in err
    assert "add nosuch to --proxies" not in err and not store.exists()


def test_the_start_line_counts_settings_and_seeds_apart_and_exact_copies_are_called_so(tmp_path: Path,
                                                                                          capsys) -> None:
    code = main(["run", "--dataset", "digits", "--subset", "200", "--tasks", "mislabeled,suspects", "--proxies",
                 "final_loss", "--noise-rates", "0.1,0.2", "--seeds", "0,1", "--epochs", "1", "--bootstrap", "0",
                 "--task-arg", "suspects.duplicates=exact", "--store", str(tmp_path / "store"),
                 "--out", str(tmp_path / "out"), "--executor", "inprocess", "--no-progress"])
    assert code == 0
    out, err = capsys.readouterr()
    assert " · 3 settings × 2 seeds · " in err  # noise=0.1, noise=0.2, the suspects task's one
    assert "(exact copies among the training samples" in out and "near copies" not in out


def test_suspect_captions_with_long_class_names_do_not_overlap(tmp_path: Path, monkeypatch) -> None:
    """`#4 automobile->airplane` ran into its neighbours' captions in a grid of fixed 1.1 in cells."""
    import numpy as np
    import pandas as pd

    import harness.plots as plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or Path(path))
    table = pd.DataFrame({"index": range(12), "label": [1] * 12, "predicted": [0] * 12, "score": np.arange(12.0)})
    pictures = np.zeros((12, 3, 32, 32), np.uint8)
    plots.plot_suspects(table, pictures, "csl", tmp_path / "s.png", ["airplane", "automobile"], 6)
    fig = figures[0]
    renderer = fig.canvas.get_renderer()
    boxes = [ax.title.get_window_extent(renderer) for ax in fig.axes if ax.get_title()]
    for row in (boxes[:6], boxes[6:]):
        assert all(a.x1 <= b.x0 for a, b in zip(row, row[1:], strict=False))
    title = fig._suptitle.get_window_extent(renderer)
    assert all(title.y0 >= b.y1 or title.x1 <= b.x0 or title.x0 >= b.x1 for b in boxes[:6])


# --- what walkthroughs of writing a proxy plugin and of the own-loop tracker found -----------------------------
def test_a_plugin_asking_for_an_unregistered_recorder_no_longer_breaks_every_tracker(monkeypatch) -> None:
    """`SampleTracker(n, proxies=["csl"])` raised "unknown recorder 'train_lossx'" because of another,
    installed proxy: it is now left out of the tracker with a warning naming it."""
    import numpy as np
    import pytest
    import torch

    from harness import SampleTracker
    from proxies import Proxy, register_proxy
    from proxies.base import RecorderRequest
    from proxies.registry import PROXIES

    monkeypatch.setattr(PROXIES, "_items", dict(PROXIES._items))  # the registration is undone after the test

    @register_proxy
    class Ghost(Proxy):
        name = "ghost"
        description = "asks for a recorder nobody registered"
        citation = "none"
        recorders = (RecorderRequest.of("train_lossx"),)

        def score(self, ctx):
            return np.zeros(len(ctx.labels))

    with pytest.warns(RuntimeWarning, match=r"proxy ghost \(.*\) is left out of the tracker: unknown recorder"):
        tracker = SampleTracker(8, proxies=["csl"])
        tracker.update(torch.arange(8), logits=torch.randn(8, 3), labels=torch.randint(0, 3, (8,)))
        tracker.end_epoch()
        assert list(tracker.scores().columns) == ["index", "label", "csl"]


def test_a_mistyped_proxy_in_proxy_arg_gets_a_suggestion() -> None:
    import pytest

    from harness.errors import HarnessError
    from proxies import resolve_proxies

    with pytest.raises(HarnessError, match=r"'aun', which is not among the selected proxies \(did you mean 'aum'\?\)"):
        resolve_proxies("csl,aum", {"aun": {"window": 2}})


def test_an_array_a_recorder_does_not_hold_names_the_ones_it_does() -> None:
    import numpy as np
    import pytest

    from proxies.base import RecordedArrays

    arrays = RecordedArrays("train_loss", {"loss": np.zeros(3)})
    assert arrays["loss"].shape == (3,)
    with pytest.raises(KeyError, match="recorder train_loss holds no array 'margin'; it holds loss"):
        arrays["margin"]
