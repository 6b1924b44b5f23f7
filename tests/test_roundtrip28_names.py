"""A folder restructured between two runs in one process (a notebook): `PATH/train/<class>/...` moved
up to `PATH/<class>/...`, every image, name below the split and label as it was. The content
fingerprint leaves the `train/` level out on purpose (the same images train the same runs, and the
second run reuses the first's), but each `file` is the path below PATH, so it changes.

Found by roundtrip28: the second run's suspects CSV named `train/cat/...`, files that no longer
exist. `harness.jobs.prepared_data` keeps this process's prepared data by (DataSpec, device); the
DataSpec holds the dataset string and the fingerprint, both unchanged, so the experiment got the
first run's PreparedData, whose Dataset carries the old sample names, though `load_source` had just
reloaded the folder. `prepared_data` now rebuilds where this process loaded the
source anew since it prepared it (the second run's planning reloads the folder)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from harness.experiment import Experiment


def _folder(root: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(3)
    for cls in ("cat", "dog"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(8):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(root / "train" / cls / f"{i}.png")


def _files(make_config, root: Path, out: Path) -> list[str]:
    exp = Experiment(make_config(dataset=f"imagefolder:{root}", tasks=("suspects",), out=out, epochs=1,
                                 task_args={"suspects": {"k": 4}}))
    exp.run()
    return pd.read_csv(out / "suspects" / "suspects_seed0.csv", keep_default_na=False, dtype={"file": str})[
        "file"].tolist()


def test_a_folder_restructured_in_one_process_names_its_files_as_they_lie_now(tmp_path: Path, make_config) -> None:
    root = tmp_path / "mine"
    _folder(root)
    before = _files(make_config, root, tmp_path / "before")
    assert sorted(before) == sorted(f"train/{c}/{i}.png" for c in ("cat", "dog") for i in range(8))
    for cls in ("cat", "dog"):
        shutil.move(root / "train" / cls, root / cls)
    (root / "train").rmdir()
    after = _files(make_config, root, tmp_path / "after")
    assert sorted(after) == sorted(f"{c}/{i}.png" for c in ("cat", "dog") for i in range(8))  # got train/...
