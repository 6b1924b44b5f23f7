"""`imagefolder:/d/,exclude=x` and `imagefolder:/d,exclude=x` are one dataset name (one experiment for --out)."""

from __future__ import annotations

import pytest

from harness.values import parse_dataset


@pytest.mark.parametrize(("given", "want"), [
    ("imagefolder:/d/,exclude=x.txt", "imagefolder:/d,exclude=x.txt"),
    ("imagefolder:/d//,exclude=x.txt", "imagefolder:/d,exclude=x.txt"),
    ("imagefolder:/d,exclude=x.txt", "imagefolder:/d,exclude=x.txt"),
    ("imagefolder:/a,b/,exclude=x.txt", "imagefolder:/a,b,exclude=x.txt"),  # a comma in the folder's name
    ("imagefolder:/,exclude=x.txt", "imagefolder:/,exclude=x.txt"),  # the root stays the root
    ("imagefolder:/d/", "imagefolder:/d"),
    ("npz:/x/data.npz", "npz:/x/data.npz"),
])
def test_the_folders_trailing_slashes_go_before_the_option_too(given: str, want: str) -> None:
    assert parse_dataset(given) == want
