"""attdig2_31: a run of a model registered outside memprox that the store holds under another digest of the
model's code trained again with nothing said (after the upgrade from 9b2283e: a registry filled by another
module's decorator, read since digest31). `upgrade_notice.model_code_notice` names those runs, both digests and
the upgrade as a cause; the same run under the same digest, another run, memprox's own model or a damaged
manifest give no line."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from harness.recipe import Recipe
from harness.runspec import DataSpec, RunSpec
from harness.upgrade_notice import model_code_notice


def _held(root: Path, spec: RunSpec, name: str) -> None:
    """A stored entry's manifest.json holding `spec` (as the store writes it: `spec.to_dict()`)."""
    (root / "runs" / name).mkdir(parents=True)
    (root / "runs" / name / "manifest.json").write_text(json.dumps({"spec": spec.to_dict()}), encoding="utf-8")


def test_runs_held_under_another_model_digest_are_named(tmp_path) -> None:
    spec = RunSpec(data=DataSpec(), model="mine31", recipe=Recipe(), seed=1, model_sha="8180b118c384da48")
    _held(tmp_path, replace(spec, model_sha="75a38a4e0993755f"), "a")
    _held(tmp_path, replace(spec, seed=2, model_sha="75a38a4e0993755f"), "b")
    _held(tmp_path, replace(spec, seed=9, model_sha="0000000000000000"), "c")  # no run of this experiment
    _held(tmp_path, replace(spec, model="mlp", model_sha=""), "d")  # memprox's own
    (tmp_path / "runs" / "e").mkdir()
    (tmp_path / "runs" / "e" / "manifest.json").write_text("{not json", encoding="utf-8")
    line = model_code_notice(tmp_path, [spec, replace(spec, seed=2), replace(spec, seed=3)])
    assert line is not None
    assert line.startswith("2 run(s) (digits clean mine31 seed1, digits clean mine31 seed2) of model mine31 "
                           "train again: the store holds them under another digest of the model's code "
                           "(75a38a4e0993755f; now 8180b118c384da48)"), line
    assert "after an upgrade of memprox a model of yours may train again once with no edit of yours" in line
    assert model_code_notice(tmp_path, [replace(spec, seed=3)]) is None  # nothing held for it
    assert model_code_notice(tmp_path, [replace(spec, model_sha="75a38a4e0993755f")]) is None  # held as it is
    assert model_code_notice(tmp_path, [replace(spec, model="mlp", model_sha="")]) is None
    assert model_code_notice(tmp_path / "nowhere", [spec]) is None
