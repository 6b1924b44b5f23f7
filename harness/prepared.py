"""A dataset with its corruption applied, on the device, ready for training.

The corruption's ground truth (which samples were relabelled or duplicated) travels with the data,
so tasks score proxies against exactly what the run trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from harness.corruption import (
    content_sha,
    duplicate_clean_labels,
    inject_duplicates,
    read_label_file,
    split_label_spec,
    symmetric_noise,
)
from harness.datasets import Dataset
from harness.errors import HarnessError
from harness.runspec import Corruption, DataSpec
from harness.values import expand_home


@dataclass
class PreparedData:
    spec: DataSpec
    dataset: Dataset  # clean, as loaded
    x: torch.Tensor  # (N, C, H, W) uint8 training images after corruption, on the device
    y: torch.Tensor  # (N,) labels trained on (noisy where noise was injected), on the device
    y_clean: np.ndarray
    positives: np.ndarray  # (N,) bool ground truth of the corruption (all False when clean)
    mean: torch.Tensor  # (1, C, 1, 1)
    std: torch.Tensor

    @property
    def n(self) -> int:
        return int(self.x.shape[0])

    @property
    def num_classes(self) -> int:
        return self.dataset.num_classes

    @property
    def labels(self) -> np.ndarray:
        return self.y.cpu().numpy()

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.int64:  # token ids (text): the model embeds them as they are
            return images
        return (images.float() / 255.0 - self.mean) / self.std

    def inputs(self, idx: torch.Tensor) -> torch.Tensor:
        """Normalized, un-augmented inputs of samples `idx` (eval passes, input gradients)."""
        return self.normalize(self.x[idx])

    def test_inputs(self) -> tuple[torch.Tensor, torch.Tensor]:
        dev = self.x.device
        return self.normalize(self.dataset.x_test.to(dev)), self.dataset.y_test.to(dev)


def file_sha(path: str) -> str:
    """The content hash of a --noisy-labels file, read by the rules `read_label_file` reads it by: the
    first colon split off the key (`/data/run:1/labels.npz:worse` looked for `/data/run`), and `~`
    was not expanded (`--noisy-labels=~/labels.npy`, which the shell leaves as it is, did not exist)."""
    name, _ = split_label_spec(path)
    file = expand_home(name, "--noisy-labels")
    if not file.is_file():
        raise HarnessError(f"label file {file} does not exist; pass an existing .npy/.npz to --noisy-labels")
    return content_sha(file.read_bytes())


def prepare(spec: DataSpec, dataset: Dataset, device: torch.device) -> PreparedData:
    x = dataset.x_train.numpy()
    y_clean = dataset.y_train.numpy().astype(np.int64)
    y, positives = y_clean.copy(), np.zeros(len(y_clean), dtype=bool)
    c: Corruption = spec.corruption
    if c.kind == "noise":
        y, positives = symmetric_noise(y_clean, dataset.num_classes, c.rate, c.seed)
    elif c.kind == "duplicates":
        x, y, positives = inject_duplicates(x, y_clean, dataset.num_classes, c.pairs, c.seed)
        y_clean = duplicate_clean_labels(y_clean, c.pairs, c.seed)
    elif c.kind == "label_file":
        # the file describes the whole training set; a --subset keeps its canonical prefix
        y = read_label_file(c.label_file, dataset.full_train_size, dataset.num_classes,
                            expected_sha=c.label_file_sha)[: len(y_clean)]
        positives = y != y_clean
    elif c.kind != "none":
        raise HarnessError(f"unknown corruption {c.kind!r}")
    mean, std = dataset.channel_stats()
    shape = (1, len(mean), 1, 1)
    return PreparedData(
        spec=spec,
        dataset=dataset,
        x=torch.as_tensor(np.ascontiguousarray(x)).to(device),
        y=torch.as_tensor(y, dtype=torch.int64).to(device),
        y_clean=y_clean,
        positives=positives,
        mean=torch.tensor(mean, dtype=torch.float32, device=device).reshape(shape),
        std=torch.tensor(std, dtype=torch.float32, device=device).clamp_min(1e-6).reshape(shape),
    )
