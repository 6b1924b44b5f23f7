"""Datasets: the `Dataset` type, the loader registry and the built-in loaders, one module each.

    harness.datasets.base              LoadRequest, the DATASETS registry, load_dataset, subset rules
                                       (re-exports Dataset)
    harness.datasets.dataset           the Dataset type and its checks
    harness.datasets.digits            digits (bundled, the default)
    harness.datasets.torchvision_sets  cifar10, cifar100, mnist, fashion-mnist
    harness.datasets.imagefolder       imagefolder:PATH (listing order, labels, fingerprint)
    harness.datasets.imagefolder_files   which of its files are images; which folder links are followed
    harness.datasets.imagefolder_cache   its per-machine decode cache
    harness.datasets.pixels            PIL images to uint8 pixels (8-bit only; the gray/RGB rule of imagefolder and hf)
    harness.datasets.npz               npz:PATH
    harness.datasets.hf                hf:PATH (a Hugging Face dataset saved with save_to_disk)
    harness.datasets.hf_labels           its label column as class ids (npz:'s rules; test ids by name)
    harness.datasets.hf_text             its text column as token ids (cut, padded, warned)

Adding a dataset is one module: a function `load(request) -> Dataset` decorated with
`@register_dataset(NAME, DESCRIPTION)`, imported before the name is loaded (here, for a built-in;
by your own code, or through the `memprox.datasets` entry-point group, for a plugin).
`harness.data` is the former single module, kept as an alias of this package's public names.
"""

from __future__ import annotations

from harness.datasets.base import (
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

# The built-in loaders register themselves on import; this order is the order of `dataset_names()`.
# isort: off
from harness.datasets import digits, torchvision_sets, imagefolder, npz, hf  # noqa: F401
# isort: on

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
