"""Copies shifted by a pixel or two (harness.near_duplicates_shifted): found by the near search and
marked `shifted`, in the training pairs and in the test split's copies; the plain search missed them.
And the suspects task's duplicate tables, moved to harness.tasks.suspects_pairs, still reachable
where callers import them."""

from __future__ import annotations

import numpy as np
import torch

from harness.near_duplicates import COLUMNS, NEAR_FLOOR, TEST_COLUMNS, find_duplicates, find_pairs
from harness.near_duplicates_shifted import searches_shifts

SHIFTS = [(1, 1), (0, 1), (2, 2), (-2, 1)]  # (down, right) in pixels
ORIGINALS = [3, 50, 120, 200]


def _images(n: int, seed: int = 0) -> torch.Tensor:
    """Smooth random colour images (N, 3, 32, 32): random 12 x 12 values upsampled, so that a pixel's
    neighbours correlate as a photograph's do and no two images are alike."""
    low = torch.from_numpy(np.random.default_rng(seed).random((n, 3, 12, 12), dtype=np.float32))
    return (torch.nn.functional.interpolate(low, size=32, mode="bilinear") * 255).round().to(torch.uint8)


def _shifted(image: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`image` moved dy pixels down and dx right, the uncovered border black (as PIL's affine transform)."""
    out, h, w = torch.zeros_like(image), image.shape[-2], image.shape[-1]
    out[..., max(0, dy):h + min(0, dy), max(0, dx):w + min(0, dx)] = \
        image[..., max(0, -dy):h - max(0, dy), max(0, -dx):w - max(0, dx)]
    return out


def _planted() -> tuple[torch.Tensor, torch.Tensor]:
    x = _images(300)
    return x, torch.stack([_shifted(x[o], dy, dx) for o, (dy, dx) in zip(ORIGINALS, SHIFTS)])


def test_shifted_copies_are_found_and_marked() -> None:
    x, copies = _planted()
    pairs = find_pairs(torch.cat([x, copies]))
    assert list(pairs.columns) == COLUMNS == ["a", "b", "distance", "mirrored", "shifted"]
    assert sorted(zip(pairs["a"], pairs["b"])) == [(o, 300 + i) for i, o in enumerate(ORIGINALS)]  # and no other
    assert pairs["shifted"].all() and not pairs["mirrored"].any()
    assert (pairs["distance"] >= NEAR_FLOOR).all() and (pairs["distance"] < 1e-6).all()  # the interiors are equal


def test_shifted_test_samples_are_found_among_the_training_samples() -> None:
    x, copies = _planted()
    test = torch.cat([copies, _images(20, seed=1)])  # 4 shifted copies, 20 new images
    pairs, found = find_duplicates(x, test)
    assert len(pairs) == 0
    assert list(found.columns) == TEST_COLUMNS
    assert sorted(zip(found["test"], found["train"])) == list(enumerate(ORIGINALS))
    assert found["shifted"].all()


def test_a_pair_found_plain_keeps_its_distance_and_is_not_marked() -> None:
    x = _images(300)
    brighter = (x[7].to(torch.int16) * 9 // 10).to(torch.uint8)  # found by the plain search already
    pairs = find_pairs(torch.cat([x, brighter[None]]))
    assert pairs[["a", "b", "shifted", "mirrored"]].values.tolist() == [[7, 300, False, False]]


def test_small_images_and_tables_are_not_searched_shifted() -> None:
    assert searches_shifts(torch.zeros(5, 3, 32, 32, dtype=torch.uint8))
    assert searches_shifts(torch.zeros(5, 16, 16))
    assert not searches_shifts(torch.zeros(5, 8, 8))  # digits: too little interior
    assert not searches_shifts(torch.zeros(5, 64, 1, 1))  # a table
    assert not searches_shifts(torch.zeros(5, 32, 32, dtype=torch.int64))  # token ids
    digits = torch.from_numpy(np.random.default_rng(2).integers(0, 17, (50, 1, 8, 8))).float()
    assert not find_pairs(torch.cat([digits, torch.roll(digits[:1], 1, dims=-1)]))["shifted"].any()


def test_the_moved_names_are_still_where_callers_import_them() -> None:
    from harness.tasks import suspects, suspects_pairs

    for name in ("partner_columns", "sample_column", "pictures", "named", "COLUMNS"):
        assert getattr(suspects, name) is getattr(suspects_pairs, name)
    assert callable(suspects.duplicate_pairs) and callable(suspects.check_search_memory)
