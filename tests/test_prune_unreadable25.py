"""`store prune` in a store where some entries cannot be read by this user (another member's, kept
private): no criterion can be checked on them, so prune keeps them, and now says so in one line.
Before, `prune --all` said "removed 0 of 0 selected" and nothing of them (multiuser25)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from harness import store_report
from harness.cli import main
from harness.jobs import make_manifest
from harness.store import RunStore
from harness.training import RunOutput


def test_prune_says_the_entries_it_cannot_read_and_keeps_them(tmp_path: Path, base_spec, monkeypatch,
                                                              capsys) -> None:
    root = tmp_path / "store"
    store = RunStore(root)
    arrays = {"train_loss": {"loss": np.zeros((3, 5), dtype=np.float32)}}
    out = RunOutput(arrays=arrays, train_seconds=1.0, train_flops=1, recorder_seconds={"train_loss": 0.1},
                    recorder_flops={"train_loss": 0}, train_acc=0.5, test_acc=0.5, history=[])
    store.put(base_spec, out.arrays, make_manifest(base_spec, out, "single", "cpu"))
    entry = store.entry_dir(base_spec)
    scan = store_report._scan
    why = f"Permission denied on {entry / 'manifest.json'}"

    def as_another_user(root: Path):  # as a member sees another's private entry (root reads every file)
        found = scan(root)
        return replace(found, entries=[replace(e, status="unreadable", reason=why, manifest=None, own=False)
                                       for e in found.entries])

    monkeypatch.setattr(store_report, "_scan", as_another_user)
    assert main(["store", "prune", "--all", "--store", str(root)]) == 0
    said = capsys.readouterr().out
    assert (f"kept 1 entry you cannot read (runs/{entry.name}: {why}): prune cannot tell what they hold; their "
            "owner prunes them, or makes them readable for you (docs/store.md)") in said
    assert RunStore(root).get(base_spec) is not None
