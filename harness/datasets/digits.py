"""`digits`: scikit-learn's 8x8 handwritten digits, bundled (no download), the default dataset."""

from __future__ import annotations

import numpy as np

from harness.datasets.base import Dataset, LoadRequest, _make, register_dataset


@register_dataset("digits", "scikit-learn's 8x8 handwritten digits (bundled, the default)")
def _load_digits_request(request: LoadRequest) -> Dataset:
    return _load_digits(request.subset)


def _load_digits(subset: int | None) -> Dataset:
    """scikit-learn's 8x8 digits with a fixed stratified 80/20 split (no download, ~1 MB)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    idx_train, idx_test = train_test_split(
        np.arange(len(y)), test_size=0.2, random_state=0, stratify=y
    )
    # Canonical order = ascending original index, independent of the split's shuffle.
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    classes = [str(c) for c in bunch.target_names]
    return _make(
        "digits", images[idx_train], y[idx_train], images[idx_test], y[idx_test], classes, subset
    )
