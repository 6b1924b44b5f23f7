"""Compatibility alias: the datasets now live in the `harness.datasets` package.

`from harness.data import Dataset, load_dataset, register_dataset, ...` keeps working and gives the
very objects `harness.datasets` exports (one registry, one `Dataset` class), so code written
against this module, and loaders registered through it, need no change. New code imports
`harness.datasets`. A loader's private helpers live in its own module
(`harness.datasets.imagefolder`, `.npz`, ...): patch them there, not here.
"""

from __future__ import annotations

from harness.datasets import (
    DATASETS,
    ENTRY_POINT_GROUP,
    Dataset,
    DatasetLoader,
    LoadRequest,
    dataset_names,
    default_cache_dir,
    default_data_root,
    load_dataset,
    register_dataset,
)
from harness.datasets.base import _check_subset, _make, _test_count  # noqa: F401  (used by loaders written before)

__all__ = [
    "DATASETS",
    "ENTRY_POINT_GROUP",
    "Dataset",
    "DatasetLoader",
    "LoadRequest",
    "dataset_names",
    "default_cache_dir",
    "default_data_root",
    "load_dataset",
    "register_dataset",
]
