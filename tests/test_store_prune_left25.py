"""`store prune --label-contains seed3` (the help's own example) took the text as a plain substring, so
it also selected seed 30, 31, ... and the stability models of seed 2 (labels seed3000000 on): a user
pruning one run removed others. A number at either end of the text now matches whole."""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.jobs import make_manifest
from harness.runspec import RunSpec, TrainSubset
from harness.store import RunStore
from harness.store_admin import label_has
from harness.store_report import selection_of
from harness.training import RunOutput

SEEDS = (3, 30, 31, 13)


def _put(store: RunStore, spec: RunSpec) -> None:
    arrays = {"train_loss": {"loss": np.random.default_rng(spec.seed % 1000).random((3, 5), dtype=np.float32)}}
    out = RunOutput(arrays=arrays, train_seconds=1.0, train_flops=1, recorder_seconds={"train_loss": 0.1},
                    recorder_flops={"train_loss": 0}, train_acc=0.5, test_acc=0.5, history=[])
    store.put(spec, out.arrays, make_manifest(spec, out, "single", "cpu"))


@pytest.fixture
def store(tmp_path: Path, base_spec: RunSpec) -> tuple[Path, dict[str, str]]:
    """Seeds 3, 30, 31, 13 and a stability model of seed 2 (seed 3000000): (root, label -> digest)."""
    root = tmp_path / "store"
    runs = RunStore(root)
    specs = [replace(base_spec, seed=s) for s in SEEDS]
    specs.append(replace(base_spec.with_subset(TrainSubset(kind="random", fraction=0.7, seed=2, index=0)),
                         seed=3_000_000))
    for spec in specs:
        _put(runs, spec)
    return root, {spec.label(): spec.digest() for spec in specs}


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capsys.readouterr().out


def test_seed3_selects_seed_3_alone(store, capsys) -> None:
    root, labels = store
    code, out = _cli(capsys, "store", "prune", "--store", str(root), "--label-contains", "seed3", "--dry-run")
    assert code == 0
    listed = re.findall(r"would remove runs/(\w+)  (.+?)  \d+ bytes", out)
    assert listed == [(labels["digits noise=0.1 mlp seed3"], "digits noise=0.1 mlp seed3")]
    assert "would remove 1, freeing" in out
    code, out = _cli(capsys, "store", "prune", "--store", str(root), "--label-contains", "seed3")
    assert code == 0 and "removed 1 of 1 selected" in out
    left = sorted(p.name for p in (root / "runs").iterdir())
    assert left == sorted(d for label, d in labels.items() if label != "digits noise=0.1 mlp seed3")


def test_letters_stay_plain_text(store, capsys) -> None:
    """`seed` (no number) still selects every run, `on=random` the stability model, `seed3000000` it."""
    root, labels = store
    for text, count in (("seed", 5), ("on=random", 1), ("seed3000000", 1), ("seed3 ", 0), ("seed1", 0)):
        code, out = _cli(capsys, "store", "prune", "--store", str(root), "--label-contains", text, "--dry-run")
        assert code == 0 and f"would remove {count}, freeing" in out, (text, out)


@pytest.mark.parametrize("label, text, found", [
    ("digits noise=0.1 mlp seed0", "noise=0.1", True),
    ("digits noise=0.15 mlp seed0", "noise=0.1", False),
    ("digits noise=1e-05 mlp seed0", "noise=1", False),
    ("digits noise=0.1 mlp seed0", "0.1", True),
    ("digits noise=0.1 mlp seed0", "1", False),  # the 1 of 0.1 is no number of its own
    ("digits noise=0.1 mlp seed0 on=half0/2@0 then=half1/2@0", "then=", True),
    ("digits clean mlp seed30", "seed3", False),
    ("digits clean mlp seed3 on=fold0/5@3", "seed3", True),
    ("digits clean mlp seed3 on=fold0/5@3", "@3", True),
    ("digits clean mlp seed3 on=fold0/5@30", "@3", False),
    ("digits clean mlp seed13", "seed13", True),
    ("digits clean mlp seed13", "d13", True),  # letters before it: plain text
    ("digits clean mlp seed13", "3", False),
    ("cifar10 clean resnet18 seed0", "resnet", True),
])
def test_label_has(label: str, text: str, found: bool) -> None:
    assert label_has(label, text) is found


def test_the_help_says_the_rule(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["store", "prune", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "'seed3' selects seed3, not seed30 or seed3000017" in text
    assert selection_of({"label_contains": "seed3"})[0].label_contains == "seed3"
    page = " ".join((Path(__file__).resolve().parents[1] / "docs" / "store.md").read_text().split())
    assert "`seed3` selects seed 3, not seed 30 or the stability models `seed3000000`" in page
