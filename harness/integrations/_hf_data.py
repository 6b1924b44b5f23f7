"""How a sample's index travels with its row to `CSLTrainer.compute_loss`: the dataset gets it
(`with_sample_index`: a column of a `datasets.Dataset`, else `WithIndex`), and the collator sets it
aside before the `Trainer`'s own collator (padding, masking, default) runs and puts it back as a
(B,) tensor (`IndexCollator`). Part of `harness.integrations.transformers`, which exports both.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import torch
from transformers.data.data_collator import default_data_collator

from harness.errors import HarnessError
from harness.integrations._common import WithIndex

__all__ = ["INDEX_KEY", "IndexCollator", "with_sample_index"]

#: The batch key (dataset column) carrying each sample's index.
INDEX_KEY = "sample_index"


def with_sample_index(dataset: Any, key: str = INDEX_KEY) -> Any:
    """`dataset` with each row's index: a `datasets.Dataset` gets a column `key` (0..n-1), any other
    map-style dataset of dict items is wrapped in `WithIndex`. A DatasetDict (a mapping of splits) is
    refused here: its "rows" would be the split names, and the index would number the splits."""
    if isinstance(dataset, Mapping):
        raise HarnessError(f"with_sample_index: a {type(dataset).__name__} of splits {list(dataset)[:5]}, not one "
                           f"split; pass one: with_sample_index(ds[{next(iter(dataset), 'train')!r}])")
    if not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise HarnessError(f"with_sample_index: a {type(dataset).__name__} has no length or row access (a streaming "
                           f"dataset?); give its rows their ids at the source, before any shuffle: "
                           f"ds.map(lambda row, i: {{{key!r}: i}}, with_indices=True), with n = its number of rows")
    if hasattr(dataset, "add_column") and hasattr(dataset, "column_names"):
        if key in dataset.column_names:
            raise HarnessError(f"with_sample_index: the dataset already has a {key!r} column")
        return dataset.add_column(key, np.arange(len(dataset), dtype=np.int64))
    return WithIndex(dataset, key)


class IndexCollator:
    """Collates with `collate` after setting each feature's `key` aside, then adds the indices as a
    (B,) int64 tensor: any collator (padding, masking, default) works unchanged."""

    def __init__(self, collate: Callable[[list[Any]], Any] | None = None, key: str = INDEX_KEY) -> None:
        self.collate = collate if collate is not None else default_data_collator
        self.key = key

    def __call__(self, features: list[Any]) -> Any:
        if not features or not isinstance(features[0], Mapping) or self.key not in features[0]:
            return self.collate(features)  # eval batches, datasets without indices
        indices = torch.tensor([int(f[self.key]) for f in features], dtype=torch.int64)
        batch = self.collate([{k: v for k, v in f.items() if k != self.key} for f in features])
        batch[self.key] = indices
        return batch
