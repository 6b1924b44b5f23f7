"""A store written by an older memprox, read by today's (upgrade27).

Stores and --out folders written by five earlier commits were reused by today's code, and today's
numbers compared with a fresh run's (docs/store.md, "Upgrading memprox"). What this file holds: an
entry a memprox before 1 December 2026 wrote has no manifest checksum, so today's store never reads
it again; `store info` called such entries damaged ("fail the integrity check"), with no label (the
first memprox wrote no `engine`, which today's Manifest needs), and `prune --unreachable`, the
command for what an upgrade left behind, passed them by: only `--damaged` or `--all` removed them.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from harness.cli import main
from harness.manifest import manifest_digest
from harness.store import RunStore
from harness.store_reach import rebuild_spec

OLD, BAD = "bd174ca60ce2ae7a2951", "0123456789abcdef0123"


def _spec(seed: int) -> dict:
    return {"data": {"dataset": "digits", "subset": None, "corruption": {"kind": "noise", "rate": 0.1, "pairs": 0,
                                                                          "seed": 0, "label_file": "",
                                                                          "label_file_sha": ""}},
            "model": "mlp", "seed": seed, "then_on": None,
            "recipe": {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "batch_size": 64,
                       "epochs": 2, "schedule": "cosine", "milestones": [], "gamma": 0.1, "augment": False,
                       "crop_padding": 4},
            "train_on": {"kind": "all", "index": 0, "count": 1, "seed": 0, "fraction": 1.0}}


def _entry(root: Path, digest: str, manifest: dict) -> Path:
    folder = root / "runs" / digest
    folder.mkdir(parents=True)
    np.save(folder / "train_loss.loss.npy", np.ones((5, 2), dtype=np.float32))
    (folder / "manifest.json").write_text(json.dumps(manifest))
    return folder


@pytest.fixture
def store(tmp_path: Path) -> Path:
    """One entry as the first memprox (38e826d) wrote it: no checksum, no engine or threads; and one
    entry that is damaged (a checksum that does not match)."""
    root = tmp_path / "store"
    for sub in ("partial", "locks"):
        (root / sub).mkdir(parents=True)
    recorders = {"train_loss": {"arrays": ["loss"], "seconds": 0.1, "flops": 0}}
    _entry(root, OLD, {"spec": _spec(0), "spec_hash": OLD, "label": "digits noise=0.1 mlp seed0",
                       "created": "2026-11-29T22:00:00+0000", "device": "cpu", "recorders": recorders,
                       "requests": {}, "checksums": {}, "history": [], "train_acc": 0.9, "test_acc": 0.9,
                       "train_flops": 1, "train_seconds": 1.0, "versions": {}, "wall_seconds": 1.0})
    bad = {"spec": _spec(1), "spec_hash": BAD, "label": "digits noise=0.1 mlp seed1", "engine": "single",
           "threads": 1, "device": "cpu", "recorders": recorders, "train_acc": 0.9, "test_acc": 0.9,
           "train_flops": 1, "train_seconds": 1.0, "created": "2026-12-04T22:00:00+0000"}
    _entry(root, BAD, {**bad, "manifest_sha256": manifest_digest({**bad, "train_acc": 0.5})})
    return root


def _cli(capsys, *args: str) -> tuple[int, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out + err


def test_info_says_an_older_memprox_made_an_entry_without_a_checksum_not_that_it_is_damaged(store, capsys) -> None:
    code, out = _cli(capsys, "store", "info", "--store", str(store), "--runs")
    assert code == 0
    assert "unreachable entries without a checksum: 1, " in out and "made by a memprox before 1 December 2026" in out
    assert "damaged entries: 1, " in out  # the one whose checksum does not match, only
    rows = {line.split()[0]: line for line in out.splitlines() if line[:20] in (OLD, BAD)}
    assert "digits noise=0.1 mlp seed0" in rows[OLD] and "2026-11-29T22:00:00+0000" in rows[OLD]
    assert "unreachable (no checksum)" in rows[OLD] and rows[OLD].rstrip().endswith("train_loss")
    assert " damaged " in rows[BAD]


def test_prune_unreachable_removes_what_an_upgrade_left_and_keeps_the_damaged(store, capsys) -> None:
    code, out = _cli(capsys, "store", "prune", "--store", str(store), "--unreachable", "--dry-run")
    assert code == 0 and f"would remove runs/{OLD}  digits noise=0.1 mlp seed0" in out and BAD not in out
    code, out = _cli(capsys, "store", "prune", "--store", str(store), "--unreachable")
    assert code == 0 and "removed 1 of 1 selected" in out
    assert not (store / "runs" / OLD).exists() and (store / "runs" / BAD / "manifest.json").is_file()


def test_an_entry_without_a_checksum_is_selected_by_its_label_date_and_by_damaged(store, capsys) -> None:
    """By its manifest's fields, as a complete entry is (it names its run though today's Manifest cannot
    hold it), and still by --damaged, as before: both ways to remove it keep working."""
    code, out = _cli(capsys, "store", "prune", "--store", str(store), "--label-contains", "seed0",
                     "--older-than", "1", "--dataset", "digits", "--dry-run")
    assert code == 0 and f"would remove runs/{OLD}" in out and "would remove 1," in out
    code, out = _cli(capsys, "store", "prune", "--store", str(store), "--damaged", "--dry-run")
    assert code == 0 and f"would remove runs/{OLD}" in out and f"would remove runs/{BAD}" in out
    code, out = _cli(capsys, "store", "prune", "--store", str(store), "--label-contains", "seed1", "--dry-run")
    assert code == 0 and "would remove 0," in out  # a damaged entry only when asked for, as before


def test_an_experiment_needing_such_an_entry_says_an_older_memprox_made_it_not_that_it_is_damaged(tmp_path) -> None:
    """The run that needs it trains again at its address, and the line says why without calling the
    disk's data damaged: it once read 'is damaged or unverifiable (manifest.json has no checksum ...)'."""
    spec = rebuild_spec(_spec(0))
    store = RunStore(tmp_path / "store")
    _entry(store.root, spec.digest(), {"spec": _spec(0), "label": spec.label(), "recorders": {}})
    with pytest.warns(UserWarning) as caught:
        assert store.get(spec) is None
    (line,) = [str(w.message) for w in caught]
    assert line == (f"run store entry {store.entry_dir(spec)} (digits noise=0.1 mlp seed0) was made by a memprox "
                    "before 1 December 2026, whose entries carry no checksum, so it is not read as it is; "
                    "recomputing it")
