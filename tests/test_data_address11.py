"""A run's address holds what the data are, not where they lie: an image folder, an `npz:` file or a
label file copied to another path (or named by a relative path, or with a trailing `/`) finds the
runs stored for the original, and an edited copy never does. Until December 2026 the address held
`imagefolder:PATH` as written, so each of these trained every run again, against what the docs
promised (a copy on a Ray node, a moved folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from harness.experiment import Experiment
from harness.recipe import Recipe
from harness.runspec import Corruption, DataSpec, RunSpec, label_file_key


def _folder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for c, name in enumerate(("ant", "bee", "cow")):
        (root / name).mkdir(parents=True)
        for i in range(12):
            pixels = np.clip(rng.normal(60 + 70 * c, 30, (8, 8, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{12 * c + i:05d}.png")
    return root


def _run(make_config, tmp_path: Path, dataset: str, out: str, **kw):
    cfg = make_config(dataset=dataset, proxies="final_loss", epochs=1, store=tmp_path / "store", out=tmp_path / out,
                      **kw)
    return Experiment(cfg).run()


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEMPROX_CACHE", str(tmp_path / "cache"))
    return tmp_path


def test_a_copied_moved_or_respelled_image_folder_reuses_its_runs(make_config, in_tmp: Path) -> None:
    tmp_path = in_tmp
    root = _folder(tmp_path / "mine")
    first = _run(make_config, tmp_path, f"imagefolder:{root}", "o1")
    assert first.trained and not first.reused
    shutil.copytree(root, tmp_path / "elsewhere" / "copy", copy_function=shutil.copyfile)  # new mtimes
    for i, name in enumerate((f"imagefolder:{root}/", "imagefolder:mine", f"imagefolder:{tmp_path}/elsewhere/copy")):
        again = _run(make_config, tmp_path, name, f"o{i + 2}")
        assert not again.trained and len(again.reused) == len(first.trained), name
        assert again.leaderboard["mean"].tolist() == first.leaderboard["mean"].tolist()
    edited = tmp_path / "edited"
    shutil.copytree(root, edited)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(edited / "ant" / "00000.png")
    assert _run(make_config, tmp_path, f"imagefolder:{edited}", "o9").trained  # an edit is another dataset


def test_a_copied_label_file_reuses_its_runs_and_another_key_does_not(make_config, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    from harness.datasets import load_dataset

    y = load_dataset("digits").y_train.numpy()
    worse = np.where(rng.random(len(y)) < 0.1, (y + 1) % 10, y)
    path = tmp_path / "labels.npz"
    np.savez(path, worse=worse, other=np.where(rng.random(len(y)) < 0.2, (y + 3) % 10, y))
    first = _run(make_config, tmp_path, "digits", "o1", noisy_labels=f"{path}:worse", noise_rates=())
    (tmp_path / "moved").mkdir()
    shutil.copyfile(path, tmp_path / "moved" / "labels.npz")
    again = _run(make_config, tmp_path, "digits", "o2", noisy_labels=f"{tmp_path}/moved/labels.npz:worse",
                 noise_rates=())
    assert not again.trained and again.leaderboard["mean"].tolist() == first.leaderboard["mean"].tolist()
    other = _run(make_config, tmp_path, "digits", "o3", noisy_labels=f"{path}:other", noise_rates=())
    assert other.trained  # the key names other labels: another run


def test_the_address_drops_the_path_only_where_a_content_hash_stands_for_it() -> None:
    recipe = Recipe()

    def digest(dataset: str, sha: str = "", label_file: str = "", label_sha: str = "") -> str:
        c = Corruption("label_file", label_file=label_file, label_file_sha=label_sha) if label_file else Corruption()
        return RunSpec(DataSpec(dataset, corruption=c, dataset_sha=sha), "mlp", recipe).digest()

    assert digest("npz:/a/x.npz", "ab" * 8) == digest("npz:/b/y.npz", "ab" * 8) != digest("npz:/a/x.npz", "cd" * 8)
    assert digest("npz:/a/x.npz", "ab" * 8) != digest("imagefolder:/a/x.npz", "ab" * 8)  # the kind stays
    assert digest("digits") == "f7a891192a6a6221bd8f"  # built-in datasets keep their addresses (as before)
    assert digest("digits", "", "/a/l.npz:k", "12" * 8) == digest("digits", "", "/b/m.npz:k", "12" * 8)
    assert digest("digits", "", "/a/l.npz:k", "12" * 8) != digest("digits", "", "/a/l.npz:j", "12" * 8)
    assert [label_file_key(s) for s in ("/a/b.npy", "/a/b.npz", "/a/b.npz:worse", "C:/x/b.npz:k", "/a:b/c.npz")] == [
        "", "", ":worse", ":k", ""]


def test_a_trailing_slash_is_the_same_experiment_for_the_output_folder(in_tmp: Path) -> None:
    """The dataset name is written into the result files and the output folder's identity: a rerun
    spelled with a trailing `/` was refused as "another experiment" in the same --out."""
    import pandas as pd

    from harness.api import experiment_config
    from harness.cli import main
    from harness.values import parse_dataset

    root = _folder(in_tmp / "mine")
    assert experiment_config(dataset=f"imagefolder:{root}//").dataset == f"imagefolder:{root}"
    assert experiment_config(dataset="npz:/").dataset == "npz:/"  # the root keeps its slash
    assert parse_dataset("imagefolder:C:/") == "imagefolder:C:/"  # a drive's root too
    assert parse_dataset("mine:s3://bucket/prefix/") == "mine:s3://bucket/prefix/"  # a plugin's PATH as given
    assert parse_dataset("digits") == "digits" and parse_dataset("hf:data//") == "hf:data"
    argv = ["run", "--proxies", "final_loss", "--tasks", "mislabeled", "--noise-rates", "0.2", "--seeds", "1",
            "--epochs", "1", "--store", str(in_tmp / "store"), "--out", str(in_tmp / "out"), "--no-progress",
            "--executor", "inprocess"]
    assert main([*argv, "--dataset", f"imagefolder:{root}/"]) == 0
    assert main([*argv, "--dataset", f"imagefolder:{root}"]) == 0
    assert set(pd.read_csv(in_tmp / "out" / "leaderboard.csv")["dataset"]) == {f"imagefolder:{root}"}
