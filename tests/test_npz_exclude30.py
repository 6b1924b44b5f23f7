"""`npz:x.npz,exclude=FILE` says the option is imagefolder:'s, not only that `x.npz,exclude=FILE` is missing."""

from __future__ import annotations

import numpy as np
import pytest

from harness.datasets import load_dataset
from harness.errors import HarnessError


def test_exclude_on_an_npz_names_the_option(tmp_path) -> None:
    np.savez(tmp_path / "x.npz", x=np.zeros((4, 1, 2, 2), np.uint8), y=np.array([0, 1, 0, 1]))
    with pytest.raises(HarnessError, match=r"does not exist \(,exclude=FILE is imagefolder:'s option"):
        load_dataset(f"npz:{tmp_path / 'x.npz'},exclude=drop.txt")


def test_a_plain_missing_file_says_no_more(tmp_path) -> None:
    with pytest.raises(HarnessError, match=r"does not exist; pass npz:PATH") as caught:
        load_dataset(f"npz:{tmp_path / 'y.npz'}")
    assert "exclude" not in str(caught.value)
