"""The suspects task's figures name each drawn sample's file (image folders): a reader of
`figures/suspects_seed0.png` or `figures/duplicates.png` goes to open or fix that file, and the
index alone sent them to suspects.csv first. Each caption's file is checked against the pixels drawn
above it, so a caption shifted by one sample fails."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_train_test_duplicates14 import _folder, _planted


@pytest.fixture
def drawn(monkeypatch) -> dict[str, list[tuple[np.ndarray, str]]]:
    """Every image the figures draw with its caption, by the figure's file name."""
    import harness.plots as plots

    cells: list[tuple[np.ndarray, str]] = []
    by_figure: dict[str, list[tuple[np.ndarray, str]]] = {}
    show, save = plots.show_image, plots.save_figure

    def recording_show(ax, image: np.ndarray, title: str | None) -> None:
        cells.append((np.asarray(image).copy(), title or ""))
        show(ax, image, title)

    def recording_save(fig, path):
        by_figure[Path(path).name] = list(cells)
        cells.clear()
        return save(fig, path)

    monkeypatch.setattr(plots, "show_image", recording_show)
    monkeypatch.setattr(plots, "save_figure", recording_save)
    return by_figure


def _pixels(root: Path, name: str) -> np.ndarray:
    return np.asarray(Image.open(root / name)).transpose(2, 0, 1)


def test_each_caption_names_the_file_whose_pixels_it_shows(tmp_path: Path, monkeypatch, drawn) -> None:
    from harness.api import run_experiment

    train, test = _planted()
    train_labels, test_labels = np.arange(200) % 4, np.arange(50) % 4
    train_labels[120] = train_labels[17]
    test_labels[3], test_labels[9], test_labels[20] = train_labels[17], train_labels[40], train_labels[90]
    data = tmp_path / "data"
    _folder(data, train, train_labels, test, test_labels)
    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "cache"))
    with pytest.warns(UserWarning, match="test samples copy a training sample"):
        run_experiment(dataset=f"imagefolder:{data}", model="mlp", proxies="final_loss", tasks="suspects", seeds=1,
                       epochs=1, out=tmp_path / "out", store=tmp_path / "store", executor="inprocess",
                       progress=False, task_args={"suspects": {"k": 6}})
    assert set(drawn) == {"suspects_seed0.png", "duplicates.png", "train_test_duplicates.png"}
    assert len(drawn["suspects_seed0.png"]) == 6 and len(drawn["duplicates.png"]) == 2
    assert len(drawn["train_test_duplicates.png"]) == 6  # 3 pairs, 2 images each
    for figure, cells in drawn.items():
        for image, caption in cells:
            lines = caption.split("\n")
            assert len(lines) == 3, (figure, caption)  # "#index label(s)", the file, the score or distance
            file = lines[1]
            assert file.startswith(("train/", "test/")) and file.endswith(".png"), (figure, caption)
            assert (image == _pixels(data, file)).all(), (figure, caption)
    # the training copy pair (17, 120) and the test copies: the files of both sides
    assert [c.split("\n")[1] for _, c in drawn["duplicates.png"]] == [
        f"train/c{train_labels[17]}/train017.png", f"train/c{train_labels[120]}/train120.png"]


def test_a_long_file_name_keeps_its_end() -> None:
    """A caption shows at most FILE_CAPTION_CHARS characters of a file: the end, which holds its name."""
    from harness.plots import FILE_CAPTION_CHARS, _file_line

    long = "deep/folder/structure/of/a/user/IMG_20230101_123456789.jpg"
    line = _file_line({4: long}, 4)
    assert line == "..." + long[-(FILE_CAPTION_CHARS - 3):] + "\n" and len(line) == FILE_CAPTION_CHARS + 1
    assert _file_line({4: "a/b.png"}, 4) == "a/b.png\n" and _file_line(None, 4) == ""


def test_a_dollar_sign_in_a_file_or_class_name_is_drawn_as_written(tmp_path: Path, drawn) -> None:
    """Matplotlib read text between two `$` as math: `a$_$b.png` raised a ParseSyntaxException and
    the evaluation, with it the leaderboard, was lost. A sample missing from `files` gets no file line."""
    import pandas as pd

    from harness.plots import plot_pairs, plot_suspects

    pictures = {i: np.full((3, 4, 4), 40 * i, dtype=np.uint8) for i in range(3)}
    table = pd.DataFrame({"index": [0, 1], "label": [0, 1], "predicted": [1, 1], "score": [2.0, 1.0]})
    plot_suspects(table, pictures, "csl", tmp_path / "s.png", ["c$1$", "d"], 4, files={0: "x/a$_$b.png"})
    assert [c for _, c in drawn["s.png"]] == ["#0 c$1$->d\nx/a$_$b.png\n2", "#1 d->d\n1"]
    pairs = pd.DataFrame({"a": [0], "b": [2], "label_a": [0], "label_b": [0], "distance": [0.0]})
    plot_pairs(pairs, pictures, tmp_path / "p.png", ["$x$"], 4, files={0: "$1$.png", 2: "b.png"})
    assert [c for _, c in drawn["p.png"]] == ["#0 $x$\n$1$.png\n", "#2 $x$\nb.png\nd=0"]
    assert (tmp_path / "s.png").stat().st_size > 1000 and (tmp_path / "p.png").stat().st_size > 1000
