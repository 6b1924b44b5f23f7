"""The data-quality round trip of docs/reading-results.md (roundtrip28): rank the data with the suspects
task, apply the labels a person confirmed with the page's recipes (an `npz:` file, an image folder),
run again. Each recipe runs as written, its `confirmed = ...` line replaced by the rows the test
knows are wrong: the fixed data must hold exactly the suggested labels there and nothing else
changed, the store must train the fixed data anew, and `file` must be the image's path on disk, also
for nested class folders, odd names and links."""

from __future__ import annotations

import json
import math
import os
import re
import unicodedata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.datasets import load_digits

from harness.datasets import load_dataset
from harness.experiment import Experiment

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reading-results.md"
#: Names a user's image folder may hold: the recipe must move each of them.
ODD = [" lead space.png", "a,b.png", 'q"uote.png', "caf\u00e9.png", unicodedata.normalize("NFD", "caf\u00e9.png"),
       "semi;colon.png", "plane \u2116 7.png"]


def _block(marker: str, confirmed: bool = True) -> str:
    """The python block after `marker`, its `confirmed = ...` line (the reader's own rows) left out."""
    text = PAGE.read_text(encoding="utf-8")
    assert marker in text, f"docs/reading-results.md lost its {marker} line"
    found = re.search(r"```python\n(.*?)^```", text[text.index(marker):], re.M | re.S)
    assert found, f"no python block after {marker}"
    lines = found.group(1).splitlines()
    assert sum(line.startswith("confirmed = ") for line in lines) == int(confirmed), "the confirmed = line moved"
    return "\n".join(line for line in lines if not line.startswith("confirmed = "))


def _run(make_config, dataset: str, out: str) -> tuple[Experiment, dict]:
    exp = Experiment(make_config(dataset=dataset, tasks=("suspects",), proxies="csl", out=Path(out), epochs=10,
                                 lr=0.1))
    result = exp.run()
    return exp, {"trained": len(result.trained), "reused": len(result.reused)}


def _ranked(out: str) -> pd.DataFrame:
    return pd.read_csv(Path(out) / "suspects" / "suspects_seed0.csv", keep_default_na=False,
                       dtype={"file": str, "duplicates": str, "label_name": str, "suggested_name": str})


def test_the_npz_recipe_writes_the_suggested_labels_of_the_confirmed_rows(tmp_path: Path, make_config,
                                                                          monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    digits = load_digits()
    x, true = (digits.images * 255 / 16).round().astype(np.uint8), digits.target.astype(np.int64)
    rng = np.random.default_rng(0)
    flipped = rng.choice(len(true), 60, replace=False)
    y = true.copy()
    y[flipped] = (y[flipped] + rng.integers(1, 10, 60)) % 10
    files = np.array([f"{i:05d}" for i in range(len(y))])  # ids that read back as numbers without dtype=str
    np.savez("mine.npz", x=x[:1500], y=y[:1500], x_test=x[1500:], y_test=true[1500:], files=files[:1500])
    _, first = _run(make_config, "npz:mine.npz", "results/latest")
    ranked = _ranked("results/latest")
    assert (ranked["file"] == files[ranked["index"]]).all() and (ranked["label"] == y[ranked["index"]]).all()
    top = ranked.head(30)
    confirmed = top["index"][top["index"].isin(flipped)].tolist()  # the wrong ones a person would confirm
    assert len(confirmed) >= 20, len(confirmed)  # csl finds flipped digits (all 40 of 40 in the docs' run)

    exec(compile(f"confirmed = {confirmed!r}\n" + _block("<!-- fix-npz-example -->"), str(PAGE), "exec"),
         {"__name__": "__main__"})
    before, after = np.load("mine.npz"), np.load("mine_fixed.npz")
    assert sorted(after.files) == sorted(before.files)
    for key in before.files:
        if key != "y":
            assert np.array_equal(after[key], before[key]), key
    expected = before["y"].copy()
    expected[confirmed] = ranked.set_index("index").loc[confirmed, "suggested"].to_numpy()
    assert np.array_equal(after["y"], expected)  # the suggested labels there, every other row as it was
    assert (after["y"][confirmed] != before["y"][confirmed]).all()
    assert (after["y"][confirmed] == true[confirmed]).mean() >= 0.9  # and they are mostly the true digits

    exp, second = _run(make_config, "npz:mine_fixed.npz", "fixed")
    assert first == second == {"trained": 1, "reused": 0}  # new labels: never the old run
    capsys.readouterr()
    exec(compile(_block("<!-- check-fix-example -->", confirmed=False), str(PAGE), "exec"), {"__name__": "__main__"})
    printed = capsys.readouterr().out.splitlines()
    for out, line in zip(("results/latest", "fixed"), printed, strict=True):
        (run,) = json.loads((Path(out) / "summary.json").read_text())["runs"]
        assert 0 < run["test_acc"] <= 1 and math.isfinite(run["test_acc"])
        assert line == f"{out} [{round(run['test_acc'], 3)}]"


def test_the_npz_recipe_refuses_a_file_the_suspects_were_not_ranked_on(tmp_path: Path, make_config,
                                                                       monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    digits = load_digits()
    x, y = (digits.images * 255 / 16).round().astype(np.uint8), digits.target.astype(np.int64)
    np.savez("mine.npz", x=x, y=y)
    _run(make_config, "npz:mine.npz", "results/latest")
    top = _ranked("results/latest").head(3)
    np.savez("mine.npz", x=x, y=(y + 1) % 10)  # another labelling under the same name
    with pytest.raises(SystemExit, match="not the file the suspects were ranked on"):
        exec(compile(f"confirmed = {top['index'].tolist()!r}\n" + _block("<!-- fix-npz-example -->"), str(PAGE),
                     "exec"), {"__name__": "__main__"})
    assert not Path("mine_fixed.npz").exists()


def _folder(root: Path, split: bool) -> dict[str, str]:
    """Two classes of 12 random 8 x 8 images, each class with a nested subfolder, odd names (unique across
    the classes: the recipe refuses to move an image onto another) and a link to an image outside the
    folder; {file as the suspects CSV names it: class}."""
    from PIL import Image

    rng = np.random.default_rng(1 if split else 2)  # other images: one process must not mix the layouts'
    base = root / "train" if split else root
    outside = root.parent / "outside"
    outside.mkdir(exist_ok=True)
    made = {}
    for c, cls in enumerate(("cat", "dog")):
        for i in range(12):
            name = (ODD[i] if c == 0 else ODD[i].replace(".png", " d.png")) if i < len(ODD) else f"{cls}{i}.png"
            rel = Path(cls, "in door" if i % 2 else "", name)
            (base / rel).parent.mkdir(parents=True, exist_ok=True)
            image = Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8))
            if i == 11:  # a link out of the tree, as a folder assembled from other folders holds
                image.save(outside / f"{cls}.png")
                os.symlink(os.path.relpath(outside / f"{cls}.png", (base / rel).parent), base / rel)  # relative
            else:
                image.save(base / rel)
            made[(Path("train") / rel if split else rel).as_posix()] = cls
    return made


@pytest.mark.parametrize("split", [True, False], ids=["train-test", "class-folders"])
def test_the_image_folder_recipe_moves_the_confirmed_images(tmp_path: Path, make_config, monkeypatch,
                                                            split: bool) -> None:
    monkeypatch.chdir(tmp_path)
    made = _folder(tmp_path / "mine", split)
    first_exp, first = _run(make_config, "imagefolder:mine", "results/latest")
    ranked = _ranked("results/latest")
    assert sorted(ranked["file"]) == sorted(made)  # every file is the path on disk, odd names included
    assert (ranked["label_name"] == ranked["file"].map(made)).all()
    names = [Path(f).name for f in made]  # cat's 12, then dog's
    confirmed = [f for f, name in zip(made, names) if name in ODD[:3]] + list(made)[-8:-7] + list(made)[-1:]
    assert len(confirmed) == 5  # odd names, nested ones, dog's NFD cafe\u0301 and its link

    exec(compile(f"confirmed = {confirmed!r}\n" + _block("<!-- fix-imagefolder-example -->"), str(PAGE), "exec"),
         {"__name__": "__main__"})
    suggested = ranked.set_index("file").loc[confirmed, "suggested_name"]
    at = 1 if split else 0
    expected = [Path(*Path(f).parts[:at], suggested[f], *Path(f).parts[at + 1:]).as_posix() for f in confirmed]
    moves = pd.read_csv("moves.csv", keep_default_na=False, dtype=str)
    assert moves.values.tolist() == [list(pair) for pair in zip(confirmed, expected)]
    assert all(suggested[f] != made[f] for f in confirmed)
    after = load_dataset("imagefolder:mine")
    labels = dict(zip(after.sample_names, (after.classes[c] for c in after.y_train.tolist())))
    assert labels == {**{f: c for f, c in made.items() if f not in confirmed},
                      **{e: suggested[f] for f, e in zip(confirmed, expected)}}
    link = [e for f, e in zip(confirmed, expected) if f.endswith("dog11.png")]
    assert link and (tmp_path / "mine" / link[0]).is_symlink() and (tmp_path / "mine" / link[0]).exists()

    exp, second = _run(make_config, "imagefolder:mine", "fixed")
    assert first == second == {"trained": 1, "reused": 0}  # the folder's labels changed: a new run
    assert exp.dataset.fingerprint != first_exp.dataset.fingerprint
