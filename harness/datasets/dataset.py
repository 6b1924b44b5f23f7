"""The `Dataset` type: a labelled train/test split held in memory as tensors, checked when it is made.

Its own module because the type is the contract between every loader and the rest of the harness (the
shapes and dtypes below, one class name per label id, the canonical order of `x_train`), while
`harness.datasets.base` holds the loader registry and the subset rules; the tests hold modules to 400
lines. `harness.datasets.base` and `harness.datasets` re-export it, the import paths loaders use."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from harness.errors import HarnessError


@dataclass(frozen=True, eq=False)  # eq=False: field-wise == on tensors is ambiguous
class Dataset:
    """A labelled train/test split; `x_train[i]` is sample i in the canonical order."""

    name: str
    #: (N, C, H, W) uint8 images, (N, D, 1, 1) float32 features, or (N, L, 1, 1) int64 token ids
    #: (text, `hf:` loader: tokenizer id + 1, 0 = padding; never normalised or augmented); canonical order
    x_train: torch.Tensor
    y_train: torch.Tensor  # (N,) int64
    x_test: torch.Tensor  # (M, ...) like x_train (M may be 0: no test split)
    y_test: torch.Tensor  # (M,) int64
    classes: tuple[str, ...]
    full_train_size: int  # training-set length before --subset
    #: Content identity of a file-backed dataset (npz: SHA-256 of the file; imagefolder: its listing
    #: and mtimes), "" for the built-in ones: the same name with other contents is another dataset.
    fingerprint: str = ""
    #: Where each training sample came from, in canonical order (`imagefolder:`: the image's path
    #: relative to the folder; `hf:` text: the text), so a suspect can be found and fixed; None: none.
    #: Not part of the fingerprint (which hashes names and bytes itself).
    sample_names: tuple[str, ...] | None = None
    test_sample_names: tuple[str, ...] | None = None  #: the same for the test samples

    def __post_init__(self) -> None:
        # Fail at construction, not deep inside a training loop, when a loader is wrong.
        for split, x, y in (
            ("train", self.x_train, self.y_train),
            ("test", self.x_test, self.y_test),
        ):
            tokens = x.dtype == torch.int64 and x.dim() == 4 and tuple(x.shape[2:]) == (1, 1)
            if (x.dtype not in (torch.uint8, torch.float32) and not tokens) or x.dim() != 4:
                raise HarnessError(
                    f"{self.name}: x_{split} must be uint8 images (N, C, H, W), float32 features "
                    f"(N, D, 1, 1) or int64 token ids (N, L, 1, 1), got {x.dtype} {tuple(x.shape)}"
                )
            if y.dtype != torch.int64 or y.dim() != 1 or y.shape[0] != x.shape[0]:
                raise HarnessError(
                    f"{self.name}: y_{split} must be int64 of length {x.shape[0]}, got {y.dtype} {tuple(y.shape)}"
                )
            # an id past the classes failed only after training (a gather in the test accuracy; on a
            # GPU a device-side assert that ends the process), and before that made test_acc silently low
            if len(y) and (int(y.min()) < 0 or int(y.max()) >= len(self.classes)):
                bad = int(y.min()) if int(y.min()) < 0 else int(y.max())
                raise HarnessError(f"{self.name}: y_{split} holds class id {bad}, outside [0, {len(self.classes)}) "
                                   f"for its {len(self.classes)} class names; a loader returns ids 0..C-1 and one "
                                   "name per id")
        for split, names, x in (("training", self.sample_names, self.x_train),
                                ("test", self.test_sample_names, self.x_test)):
            if names is not None and len(names) != x.shape[0]:
                raise HarnessError(f"{self.name}: {len(names)} sample names for {x.shape[0]} {split} samples")
        if self.x_test.shape[0] and self.x_test.dtype != self.x_train.dtype:
            raise HarnessError(f"{self.name}: x_test is {self.x_test.dtype} but x_train is {self.x_train.dtype}")
        if self.x_test.shape[0] and self.x_test.shape[1:] != self.x_train.shape[1:]:
            raise HarnessError(f"{self.name}: test images are {tuple(self.x_test.shape[1:])} but train images are "
                               f"{tuple(self.x_train.shape[1:])}")

    def __repr__(self) -> str:  # the dataclass default would print every pixel
        return (f"Dataset({self.name!r}, train={tuple(self.x_train.shape)}, test={tuple(self.x_test.shape)}, "
                f"classes={self.num_classes}, full_train_size={self.full_train_size})")

    @property
    def is_image(self) -> bool:
        """uint8 with 1 or 3 channels: something an image grid can show."""
        return self.x_train.dtype == torch.uint8 and self.x_train.shape[1] in (1, 3)

    @property
    def is_tokens(self) -> bool:
        """int64 token ids (N, L, 1, 1): text, fed to the model as is (no normalisation, no augmentation)."""
        return self.x_train.dtype == torch.int64

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.x_train.shape[1:]
        return (int(c), int(h), int(w))

    @property
    def n_train(self) -> int:
        return int(self.x_train.shape[0])

    def channel_stats(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """Per-channel mean and (population) std of x_train / 255, for input normalization, accumulated in
        float64 chunks (a float copy of all of CIFAR: ~600 MB). Token ids are not normalised: 0 and 1."""
        n, c = self.x_train.shape[:2]
        if self.is_tokens:
            return (0.0,) * int(c), (1.0,) * int(c)
        total = torch.zeros(c, dtype=torch.float64)
        total_sq = torch.zeros(c, dtype=torch.float64)
        for start in range(0, n, 4096):
            chunk = self.x_train[start : start + 4096].to(device="cpu", dtype=torch.float64) / 255.0
            total += chunk.sum(dim=(0, 2, 3))
            total_sq += chunk.square().sum(dim=(0, 2, 3))
        count = max(1, n * self.x_train.shape[2] * self.x_train.shape[3])
        mean = total / count
        var = (total_sq / count - mean.square()).clamp_min(0.0)
        return tuple(float(v) for v in mean), tuple(float(v) for v in var.sqrt())
