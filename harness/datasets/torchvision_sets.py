"""torchvision's CIFAR-10/100, MNIST and Fashion-MNIST (`--data-root`, `--download`).

Named `torchvision_sets` so that it does not shadow the `torchvision` package; torchvision itself
is imported only when one of these datasets is loaded.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from http.client import HTTPException
from pathlib import Path

import numpy as np
import torch

from harness.datasets.base import Dataset, LoadRequest, _make, default_data_root, register_dataset
from harness.errors import HarnessError

_TORCHVISION = {
    "cifar10": "CIFAR10",
    "cifar100": "CIFAR100",
    "mnist": "MNIST",
    "fashion-mnist": "FashionMNIST",
}


def _torchvision_loader(name: str) -> Callable[[LoadRequest], Dataset]:
    def load(request: LoadRequest) -> Dataset:
        root = request.data_root if request.data_root is not None else default_data_root()
        return _load_torchvision(name, root, request.download, request.subset)

    return load


for _name, _cls in _TORCHVISION.items():
    register_dataset(_name, f"torchvision {_cls} (--data-root, --download)")(_torchvision_loader(_name))


def _load_torchvision(name: str, root: Path, download: bool, subset: int | None) -> Dataset:
    """torchvision datasets are already arrays in their original order, so no cache is needed."""
    import torchvision.datasets as tvd

    cls = getattr(tvd, _TORCHVISION[name])
    splits = []
    for train in (True, False):
        try:
            splits.append(cls(root=str(root), train=train, download=download))
        except (RuntimeError, AssertionError, ValueError, EOFError) as exc:  # "Dataset not found ...", or a
            # damaged file: MNIST's reader asserts on a bad header and fails a reshape on a short file
            if not download and not _missing(exc):
                raise HarnessError(
                    f"{name}: dataset files under data root {root} are damaged ({type(exc).__name__}: "
                    f"{str(exc)[:200]}); delete them and fetch them again with --download, or pass --data-root "
                    f"DIR pointing at a good copy"
                ) from exc
            if download and _network_failure(exc):  # torchvision wraps a URLError in a RuntimeError
                raise _download_failed(name, root, exc) from exc
            if download:
                raise HarnessError(
                    f"{name}: files under {root} are unusable after download ({exc}); "
                    f"delete them and retry with --download, or pass --data-root DIR"
                ) from exc
            raise HarnessError(
                f"{name}: dataset files not found under data root {root}; pass --download to fetch "
                f"them there, or --data-root DIR pointing at an existing copy (torchvision's files; a folder "
                f"of images is --dataset imagefolder:PATH)"
            ) from exc
        except (OSError, HTTPException) as exc:  # network failures (URLError is an OSError; a connection
            # dropped mid-file is http.client's IncompleteRead), or a file that cannot be read
            if not _network_error(exc):  # PermissionError, EIO: "check the network" sent the user the wrong way
                raise HarnessError(
                    f"{name}: cannot read the dataset files under data root {root} ({type(exc).__name__}: "
                    f"{_one_line(exc)}); fix their permissions or the disk, or pass --data-root DIR pointing at "
                    "a readable copy"
                ) from exc
            raise _download_failed(name, root, exc) from exc
    tr, te = splits
    return _make(
        name,
        _nchw(tr.data),
        _labels(tr.targets),
        _nchw(te.data),
        _labels(te.targets),
        tr.classes,
        subset,
    )


def _missing(exc: BaseException) -> bool:
    """torchvision's "Dataset not found" (CIFAR: "not found or corrupted", by its checksum), not a file it
    found and could not parse."""
    return isinstance(exc, RuntimeError) and "not found" in str(exc)


def _network_failure(exc: BaseException) -> bool:
    """torchvision's "Error downloading ..." around a URLError: no network, not a damaged file."""
    return isinstance(exc, RuntimeError) and ("Error downloading" in str(exc) or "urlopen error" in str(exc))


def _network_error(exc: OSError | HTTPException) -> bool:
    """A download's failure (no network, a refused or reset connection, a timeout, TLS), not a file's."""
    import socket
    import ssl
    from urllib.error import URLError

    return isinstance(exc, (URLError, ConnectionError, TimeoutError, socket.gaierror, ssl.SSLError, HTTPException))


def _download_failed(name: str, root: Path, exc: BaseException) -> HarnessError:
    return HarnessError(f"{name}: download into {root} failed ({_one_line(exc)}); check the network, or place the "
                        "files there yourself and pass --data-root DIR")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def _nchw(data: np.ndarray | torch.Tensor) -> np.ndarray:
    """CIFAR stores (N, H, W, C) arrays, MNIST (N, H, W) tensors; unify to (N, C, H, W)."""
    arr = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
    if arr.ndim == 3:
        return arr[:, None, :, :]
    return arr.transpose(0, 3, 1, 2)


def _labels(targets: Sequence[int] | torch.Tensor) -> np.ndarray:
    if isinstance(targets, torch.Tensor):
        return targets.numpy().astype(np.int64)
    return np.asarray(targets, dtype=np.int64)
