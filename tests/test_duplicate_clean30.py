"""The per-sample tables' `clean_label` of a duplicated slot is the class of the image it now holds."""

from __future__ import annotations

import numpy as np

from harness.corruption import duplicate_clean_labels, inject_duplicates


def _pairs_from_images(x: np.ndarray, new_x: np.ndarray) -> list[tuple[int, int]]:
    """(a, b) for every slot a whose image changed, b the untouched slot it was copied from."""
    changed = np.flatnonzero((x != new_x).reshape(len(x), -1).any(axis=1))
    flat = x.reshape(len(x), -1)
    return [(int(a), int(np.flatnonzero((flat == new_x[a].reshape(-1)).all(axis=1))[0])) for a in changed]


def test_clean_label_of_a_copy_is_its_source_class() -> None:
    rng = np.random.default_rng(0)
    n, classes = 60, 3
    x = rng.normal(size=(n, 4)).astype(np.float32)
    y = rng.integers(0, classes, n)
    for seed in range(20):
        new_x, new_y, positives = inject_duplicates(x, y, classes, 8, seed)
        clean = duplicate_clean_labels(y, 8, seed)
        pairs = _pairs_from_images(x, new_x)
        assert len(pairs) == 8
        for a, b in pairs:
            assert clean[a] == y[b]  # the image a holds is b's
            assert new_y[a] != clean[a]  # so every copy reads as a changed label
            assert clean[b] == y[b]
        untouched = ~positives
        assert (clean[untouched] == y[untouched]).all()
        # exactly the copies differ from their true class: label != clean_label counts every one of them
        assert int((new_y != clean).sum()) == 8


def test_prepared_duplicates_setting_keeps_the_source_class() -> None:
    import torch

    from harness.datasets import load_dataset
    from harness.prepared import prepare
    from harness.runspec import Corruption, DataSpec

    dataset = load_dataset("digits", subset=200)
    original_x = dataset.x_train.numpy()
    original_y = dataset.y_train.numpy()
    flagged = 0
    for seed in range(6):
        spec = DataSpec(subset=200, corruption=Corruption(kind="duplicates", pairs=10, seed=seed))
        data = prepare(spec, dataset, torch.device("cpu"))
        for a, b in _pairs_from_images(original_x, data.x.numpy()):
            assert data.y_clean[a] == original_y[b]
        flagged += int((data.y.numpy() != data.y_clean).sum())
    assert flagged == 6 * 10  # every copy, on every seed, reads as a changed label
