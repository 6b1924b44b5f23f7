"""config27: an MPLBACKEND matplotlib does not know refuses only runs that will draw a figure (suspects
draws pictures of samples on image data only), and `--device` spellings that compute the same thing
are one experiment."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--preset", "quick", "--subset", "300", "--epochs", "2", "--seeds", "1", "--proxies", "csl",
        "--executor", "inprocess", "--no-progress", "--bootstrap", "0"]


def _cli(args: list[str], tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)  # this checkout's code
    environ = {**os.environ, "MEMPROX_CACHE": str(tmp_path / "cache"), "PYTHONPATH": path, **env}
    return subprocess.run([sys.executable, "-m", "harness", *args], capture_output=True, text=True, cwd=tmp_path,
                          env=environ, timeout=300)


def _table(tmp_path: Path) -> Path:
    """An `npz:` table of (N, D) float features: not images, so suspects draws no figure of it."""
    rng = np.random.default_rng(0)
    path = tmp_path / "table.npz"
    np.savez(path, x=rng.normal(size=(300, 6)).astype(np.float32), y=np.arange(300) % 3)
    return path


def test_suspects_on_a_table_runs_under_an_unknown_mplbackend_and_draws_nothing(tmp_path: Path) -> None:
    """`--tasks suspects` on an `npz:` table writes its CSVs and no figure, yet MPLBACKEND=qt4agg refused it
    before anything trained ("the suspects task imports matplotlib after training")."""
    out = tmp_path / "out"
    done = _cli(["run", *TINY, "--dataset", f"npz:{_table(tmp_path)}", "--tasks", "suspects", "--store",
                 str(tmp_path / "store"), "--out", str(out)], tmp_path, MPLBACKEND="qt4agg")
    assert done.returncode == 0, done.stderr
    assert (out / "suspects" / "suspects_seed0.csv").is_file()
    assert not (out / "figures").exists() or not any((out / "figures").iterdir())
    assert json.loads((out / "summary.json").read_text())["config"]["tasks"] == ["suspects"]


def test_suspects_on_images_is_still_refused_before_training(tmp_path: Path) -> None:
    """digits are 8x8 uint8 images: suspects draws them, so the backend is refused, now once the data are
    loaded, still before the store or --out is written."""
    done = _cli(["run", *TINY, "--dataset", "digits", "--tasks", "suspects", "--store", str(tmp_path / "store"),
                 "--out", str(tmp_path / "out")], tmp_path, MPLBACKEND="qt4agg")
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert len(lines) == 1 and lines[0].startswith("error: MPLBACKEND='qt4agg' is not a backend"), done.stderr
    assert "suspects task imports matplotlib" in lines[0]
    assert not (tmp_path / "store").exists() and not (tmp_path / "out").exists()


def test_tasks_that_draw_on_any_data_are_refused_before_the_data_load(monkeypatch) -> None:
    """theory and privacy draw on a table too: refused while the config is checked, without the data;
    suspects alone waits for them (images=None), and counts once they are images."""
    from harness.config_figures import IMAGE_ONLY_FIGURES, check_figure_backend

    monkeypatch.setenv("MPLBACKEND", "qt4agg")
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # importing it now raises ImportError: a check imported it
    assert IMAGE_ONLY_FIGURES == ("suspects",)
    assert check_figure_backend(("suspects", "mislabeled")) is None
    assert check_figure_backend(("suspects",), images=False) is None
    for tasks, images in ((("theory",), None), (("privacy", "suspects"), False), (("suspects",), True)):
        try:
            check_figure_backend(tasks, images=images)
        except ImportError:
            continue
        raise AssertionError(f"{tasks} with images={images} did not check the backend")
