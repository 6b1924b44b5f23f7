"""Review of today's similarity, dataset and CLI changes: the bootstrap's top-k tie-break within a
memory bound (its keys are drawn in pieces of rows, the draws unchanged), a real class folder named
like a split, and the report when the command starts with stderr closed (`2>&-`)."""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from harness import similarity
from harness.cli import main
from harness.datasets import load_dataset


def _tie_break(reference: np.ndarray, weights: np.ndarray, k: int, ties: bool = True) -> tuple[np.ndarray, int]:
    """Top-k weights with one seeded tie-break per row (or the fractional ones), and the peak memory
    numpy traced computing them."""
    tracemalloc.start()
    try:
        top = similarity.top_k_weights(reference, weights, k, np.random.default_rng(7) if ties else None)
        return top, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_bootstrap_tie_breaks_draw_their_keys_in_bounded_pieces(monkeypatch: pytest.MonkeyPatch) -> None:
    """One key per resampled copy of every tied sample: a chunk's (rows, tied columns, copies) array and
    two argsorts of it held 1 GiB at CIFAR scale (83 x 45,000 x 9, 90 % of a reference tied at the
    cut-off). In pieces of `_TIE_ELEMENTS` keys, the same keys decide and the memory is bounded."""
    rng = np.random.default_rng(0)
    n, b = 2000, 40
    reference = np.where(rng.random(n) < 0.9, 0.0, 1.0 + rng.random(n))  # the cut-off inside the zeros
    weights = rng.multinomial(n, np.full(n, 1 / n), size=b).astype(float)
    whole, _ = _tie_break(reference, weights, n // 10)
    monkeypatch.setattr(similarity, "_TIE_ELEMENTS", 1 << 12, raising=False)
    pieces, peak = _tie_break(reference, weights, n // 10)
    _, fractional = _tie_break(reference, weights, n // 10, ties=False)
    np.testing.assert_array_equal(pieces, whole)  # the same draws, whatever the piece size
    np.testing.assert_array_equal(pieces.sum(axis=1), np.full(b, n // 10))  # exactly k places in every row
    assert peak - fractional < 6 * weights.nbytes, (peak, fractional)  # was 24x: 40 x 1,800 x 8 keys, 2 ranks

    # the pieced draw is the multiset's tie-break: one place among a sample drawn twice and one drawn
    # once goes to the first with probability 2/3 (exact enumeration of the three elements)
    rows = 6000
    group = np.tile([1.0, 2.0, 1.0], (rows, 1))  # one sample above the tie, two tied, one place left
    top = similarity.top_k_weights(np.array([5.0, 3.0, 3.0]), group, 2, np.random.default_rng(3))
    assert set(map(tuple, top[:, 1:].astype(int))) == {(1, 0), (0, 1)}
    assert abs(top[:, 1].mean() - 2 / 3) < 0.02


def _ppm(path: Path, value: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"P6\n2 2\n255\n" + bytes([value, 0, 0]) * 4)


@pytest.mark.parametrize("name", ["val", "Test", "training"])
def test_a_real_class_named_like_a_split_is_loaded(tmp_path: Path, name: str) -> None:
    """A class folder of images named `val` beside `cat` and `dog` was refused as a split folder, so the
    dataset could not be loaded at all; split folders (holding class folders) are still refused."""
    root = tmp_path / "ds"
    for c, cls in enumerate(["cat", "dog", name]):
        for i in range(2):
            _ppm(root / cls / f"{c}{i}.ppm", 40 * c + i)
    ds = load_dataset(f"imagefolder:{root}", cache_dir=tmp_path / "cache")
    classes = sorted(["cat", "dog", name])
    assert ds.classes == tuple(classes)
    assert sorted(ds.y_train.tolist()) == [0, 0, 1, 1, 2, 2]
    assert ds.x_train[ds.y_train == classes.index(name), 0, 0, 0].tolist() == [80, 81]  # its own images


def test_a_closed_stderr_keeps_the_report_off_stdout(monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """Started with `2>&-`, Python has sys.stderr = None and print(file=None) writes to stdout: the
    `error:` line and the progress lines went into the leaderboard a user redirected (`> board.md`)."""
    monkeypatch.setattr(sys, "stderr", None)
    code = main(["run", "--seeds", "0"])
    out = capsys.readouterr().out
    assert code == 2
    assert out == ""  # was "error: --seeds ..."
