"""The "Your own training loop" example (docs/own-training-loop.md) runs as written and finds the
flipped labels: its AUROC and suspects, beyond test_docs.py's check that it runs.

The example is the fenced python block right after the `<!-- tracker-example -->` marker.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

ROOT = Path(__file__).resolve().parents[1]
MARKER = "<!-- tracker-example -->"


def example_source() -> str:
    doc = ROOT / "docs" / "own-training-loop.md"
    text = doc.read_text()
    assert MARKER in text, f"{doc} lost its {MARKER} marker"
    match = re.search(re.escape(MARKER) + r"\s*```python\n(.*?)```", text, re.S)
    assert match, f"{doc}: {MARKER} must be followed by a ```python block"
    return match.group(1)


def test_readme_tracker_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)  # the example writes suspects.png into the working directory
    namespace: dict = {"__name__": "__main__"}
    exec(compile(example_source(), "README example", "exec"), namespace)
    assert (tmp_path / "suspects.png").read_bytes()[:4] == b"\x89PNG"
    assert "flipped labels among the 20 suspects" in capsys.readouterr().out
    flipped, scores, suspects = namespace["flipped"], namespace["scores"], namespace["suspects"]
    truth = np.isin(scores["index"], flipped)
    assert roc_auc_score(truth, scores["csl"]) >= 0.95
    assert np.isin(suspects["index"], flipped).mean() >= 0.8
    assert {"csl", "forgetting", "aum", "final_loss", "in_confidence"} <= set(scores.columns)
