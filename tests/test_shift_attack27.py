"""The shifted copy search (harness.near_duplicates_shifted) against a brute-force reference: for each
pair, the least 1 - correlation of the per-channel-centred interiors over every shift of up to 2
pixels, either image moved, in float64 (shiftattack27)."""

from __future__ import annotations

import numpy as np
import torch

from harness.near_duplicates import find_duplicates, find_pairs
from harness.near_duplicates_shifted import REACH, _least_distance


def _reference(a: np.ndarray, b: np.ndarray) -> float:
    """The docstring's definition, pair by pair: 1 where a window is flat (no correlation)."""
    def window(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
        h, w = image.shape[-2:]
        part = image[:, REACH + dy:h - REACH + dy, REACH + dx:w - REACH + dx].astype(np.float64)
        return part - part.mean(axis=(1, 2), keepdims=True)

    best = np.inf
    for moved, fixed in ((a, b), (b, a)):
        still = window(fixed, 0, 0)
        for dy in range(-REACH, REACH + 1):
            for dx in range(-REACH, REACH + 1):
                other = window(moved, dy, dx)
                norm = np.sqrt((still**2).sum() * (other**2).sum())
                best = min(best, 1 - float((still * other).sum()) / norm if norm > 0 else 1.0)
    return max(best, 0.0)


def _framed(n: int, channels: int = 3, seed: int = 7) -> np.ndarray:
    """Images flat in the middle (one value per channel) in a frame of noise 2 pixels wide."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, channels, 32, 32)).astype(np.uint8)
    x[:, :, REACH:-REACH, REACH:-REACH] = rng.integers(0, 256, (n, channels, 1, 1))
    return x


def test_images_flat_in_the_middle_are_not_shifted_copies() -> None:
    x = _framed(60)
    i, j = np.triu_indices(len(x), 1)
    assert (_least_distance(x, i, x, j) == 1.0).all()  # no correlation: was under 0.05 for 151 of these 1,770
    assert _reference(x[0], x[1]) == 1.0
    assert find_pairs(torch.from_numpy(x)).empty  # were 54 pairs, all shifted, at 1e-9
    gray = _framed(30, channels=1, seed=8)
    assert find_pairs(torch.from_numpy(gray)).empty


def test_the_least_distance_is_the_brute_force_one() -> None:
    rng = np.random.default_rng(5)
    low = torch.from_numpy(rng.random((12, 3, 8, 8), dtype=np.float32))
    smooth = (torch.nn.functional.interpolate(low, size=24, mode="bilinear") * 255).round().to(torch.uint8).numpy()
    dim = np.zeros((12, 3, 24, 24), np.uint8)  # low contrast far from 0: 250 + 0 or 1 in a black frame
    dim[:, :, REACH:-REACH, REACH:-REACH] = 250 + rng.integers(0, 2, (12, 3, 20, 20))
    moved = np.roll(smooth[:4], (1, -2), axis=(2, 3))  # shifted copies, their edge wrapped
    x = np.concatenate([smooth, dim, moved, dim[:2].astype(np.float32) / 255])
    i, j = np.triu_indices(len(x), 1)
    found = _least_distance(x, i, x, j)
    expected = np.array([_reference(x[a], x[b]) for a, b in zip(i, j)])
    assert np.abs(found - expected).max() < 1e-5  # was 2e-3 on the low-contrast pairs
    assert (found[(i < 4) & (j == i + 24)] < 1e-6).all()


def _smooth(n: int, seed: int = 0) -> torch.Tensor:
    """Float images in [0, 1] (N, 3, 32, 32), smooth as photographs, no two alike."""
    low = torch.from_numpy(np.random.default_rng(seed).random((n, 3, 12, 12), dtype=np.float32))
    return torch.nn.functional.interpolate(low, size=32, mode="bilinear")


def test_a_nan_pixel_leaves_out_its_sample_not_every_pair() -> None:
    x = _smooth(100)
    copies = torch.stack([x[5] * 0.9, torch.roll(x[8], 1, dims=-1)])  # found plain, found shifted
    train = torch.cat([x, copies])
    train[3, 0, 10, 10] = float("nan")  # one pixel of another sample: every near pair was lost
    pairs = find_pairs(train)
    assert pairs[["a", "b", "shifted"]].values.tolist() == [[5, 100, False], [8, 101, True]]
    test = torch.cat([x[6:7] * 0.8, x[7:8]])
    test[1, 1, 0, 0] = float("nan")
    assert find_duplicates(x, test)[1][["test", "train", "shifted"]].values.tolist() == [[0, 6, False]]


def test_a_copy_both_mirrored_and_shifted_is_found_and_marked_both() -> None:
    x = (_smooth(100) * 255).round().to(torch.uint8)
    flipped = torch.roll(x[5].flip(-1), (1, -1), dims=(-2, -1))[None]  # random crop and flip, as augmented
    pairs = find_pairs(torch.cat([x, flipped]))
    assert pairs[["a", "b", "mirrored", "shifted"]].values.tolist() == [[5, 100, True, True]]  # was no pair
    assert pairs["distance"].iloc[0] < 1e-6
    _, found = find_duplicates(x, torch.cat([flipped, torch.roll(x[9], 2, dims=-1)[None]]))
    assert found[["test", "train", "mirrored", "shifted"]].values.tolist() == [[0, 5, True, True], [1, 9, False, True]]
    symmetric = torch.cat([x[7:8, :, :, :16], x[7:8, :, :, :16].flip(-1)], dim=-1)  # its own mirror
    moved = torch.cat([x, symmetric, torch.roll(symmetric, 1, dims=-2)])
    assert find_pairs(moved)[["a", "b", "mirrored", "shifted"]].values.tolist() == [[100, 101, False, True]]


def test_the_pairs_do_not_depend_on_the_order_of_the_samples() -> None:
    x = (_smooth(150, seed=3) * 255).round().to(torch.uint8)
    train = torch.cat([x, torch.roll(x[4], 1, dims=-1)[None], torch.roll(x[9].flip(-1), 2, dims=-2)[None]])
    new = (_smooth(5, seed=4) * 255).round().to(torch.uint8)
    test = torch.cat([torch.roll(x[20], (1, 1), dims=(-2, -1))[None], x[30:31] // 2, new])
    pairs, found = find_duplicates(train, test)
    order, test_order = np.random.default_rng(0).permutation(152), np.random.default_rng(1).permutation(7)
    moved_pairs, moved_found = find_duplicates(train[order], test[test_order])

    def back(table: np.ndarray, first: np.ndarray, second: np.ndarray, sort: bool) -> list[tuple[int, ...]]:
        rows = [(int(first[a]), int(second[b]), bool(m), bool(s)) for a, b, m, s in table]
        return sorted((min(a, b), max(a, b), m, s) if sort else (a, b, m, s) for a, b, m, s in rows)

    columns = ["mirrored", "shifted"]
    assert back(moved_pairs[["a", "b", *columns]].values, order, order, True) == \
        back(pairs[["a", "b", *columns]].values, np.arange(152), np.arange(152), True) == \
        [(4, 150, False, True), (9, 151, True, True)]
    assert back(moved_found[["test", "train", *columns]].values, test_order, order, False) == \
        back(found[["test", "train", *columns]].values, np.arange(7), np.arange(152), False) == \
        [(0, 20, False, True), (1, 30, False, False)]
