"""Mirrored copies (harness.near_duplicates): an image flipped left to right, plain or re-brightened,
pairs with its original, flagged `mirrored`, within the training set and between test and training
images; a symmetric image is not its own pair; a pair found both ways is kept once, plain at a tie;
the pairs equal a brute-force computation of the rule; tables and the exact search have no mirrors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from harness.near_duplicates import NEAR_FLOOR, THRESHOLD, find_duplicates, find_pairs, searches_mirrors


def _images(n: int, seed: int, shape: tuple[int, ...] = (3, 8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _flip(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[..., ::-1])


def _symmetric(image: np.ndarray) -> np.ndarray:
    """The image with its right half the mirror of its left: its own mirror."""
    out = image.copy()
    half = out.shape[-1] // 2
    out[..., half:] = out[..., :half][..., ::-1]
    return out


def _found(table: pd.DataFrame) -> dict[tuple[int, int], bool]:
    return {(int(a), int(b)): bool(m) for a, b, m in zip(table.iloc[:, 0], table.iloc[:, 1], table["mirrored"])}


def _hand_built() -> np.ndarray:
    x = _images(30, seed=0)
    x[10] = _flip(x[3])  # a mirrored copy
    x[20] = (_flip(x[5]).astype(np.float32) * 0.8 + 30).astype(np.uint8)  # mirrored, darker, less contrast
    x[25] = _symmetric(x[25])  # its own mirror, and no other copy
    x[7] = _symmetric(x[7])
    x[8] = np.clip(x[7].astype(int) + 12, 0, 255)  # a brighter plain copy of a symmetric image
    return x


def test_a_mirrored_copy_and_a_mirrored_rebrightened_copy_pair_and_nothing_else() -> None:
    table = find_pairs(torch.from_numpy(_hand_built()))
    assert list(table.columns) == ["a", "b", "distance", "mirrored", "shifted"]
    assert _found(table) == {(3, 10): True, (5, 20): True, (7, 8): False}
    distance = dict(zip(zip(table["a"], table["b"]), table["distance"]))
    assert NEAR_FLOOR <= distance[(3, 10)] < 1e-5  # the same pixels flipped
    assert NEAR_FLOOR <= distance[(5, 20)] < 1e-3  # the rounding of the darkening to uint8
    assert table["mirrored"].dtype == bool


def test_a_symmetric_image_does_not_pair_with_itself() -> None:
    x = _images(20, seed=1)
    for i in (2, 9, 15):
        x[i] = _symmetric(x[i])
    table = find_pairs(torch.from_numpy(x))
    assert table.empty and list(table.columns) == ["a", "b", "distance", "mirrored", "shifted"]


def test_a_test_image_mirroring_a_training_image_is_a_mirrored_copy() -> None:
    train, test = _images(100, seed=2), _images(20, seed=3)
    test[4] = _flip(train[17])
    test[11] = np.clip(_flip(train[60]).astype(int) - 20, 0, 255)  # mirrored and darker
    test[13] = train[40]  # a plain exact copy
    test[15] = np.clip(train[41].astype(int) + 9, 0, 255)  # a plain brighter copy
    pairs, copies = find_duplicates(torch.from_numpy(train), torch.from_numpy(test))
    assert pairs.empty
    assert list(copies.columns) == ["test", "train", "distance", "mirrored", "shifted"]
    assert _found(copies) == {(4, 17): True, (11, 60): True, (13, 40): False, (15, 41): False}
    assert copies.set_index("test").loc[13, "distance"] == 0.0  # byte-equal: 0, as before


def test_gray_images_n_h_w_are_searched_mirrored_too() -> None:
    x = _images(40, seed=4, shape=(10, 10))
    x[33] = _flip(x[6])
    assert _found(find_pairs(torch.from_numpy(x))) == {(6, 33): True}


def _brute(x: np.ndarray, k: int = 10) -> dict[tuple[int, int], bool]:
    """The rule computed directly: 1 - the correlation of per-channel-centred pixels; among each
    image's k nearest others, plain and (its mirror against the images) mirrored; the radius the plain
    search's; a pair found both ways kept at its smaller distance."""
    f = x.astype(np.float64).reshape(len(x), x.shape[1], -1)
    f = (f - f.mean(axis=2, keepdims=True)).reshape(len(x), -1)
    f /= np.linalg.norm(f, axis=1, keepdims=True)
    order = np.arange(f.shape[1]).reshape(x.shape[1:])[..., ::-1].reshape(-1)
    best: dict[tuple[int, int], tuple[float, bool]] = {}
    radius = float("nan")
    for mirrored, queries in ((False, f), (True, f[:, order])):
        distance = 1 - queries @ f.T
        np.fill_diagonal(distance, np.inf)
        if not mirrored:
            radius = THRESHOLD * float(np.median(distance.min(axis=1)))
        for i in range(len(x)):
            for j in np.argsort(distance[i], kind="stable")[:k]:
                if distance[i, j] <= radius:
                    key, d = (min(i, int(j)), max(i, int(j))), float(distance[i, j])
                    if key not in best or d < best[key][0] - 1e-5:
                        best[key] = (d, mirrored)
    return {key: m for key, (_, m) in best.items()}


def test_the_pairs_match_a_brute_force_computation_of_the_rule() -> None:
    x = _images(200, seed=5, shape=(3, 6, 6)).astype(np.float32)
    rng = np.random.default_rng(6)
    for n, (a, b) in enumerate(rng.choice(200, (24, 2), replace=False)):  # copies with growing noise
        copy = _flip(x[a]) if n % 2 else x[a]
        x[b] = copy + rng.normal(0, rng.uniform(5, 60), x[a].shape)
    x = np.clip(x, 0, 255).astype(np.uint8)
    expected = _brute(x)
    assert sum(expected.values()) >= 3 and sum(not m for m in expected.values()) >= 3  # both kinds, not all
    assert len(expected) < 24
    assert _found(find_pairs(torch.from_numpy(x))) == expected


def test_tables_and_the_exact_search_have_no_mirrors() -> None:
    rows = np.random.default_rng(7).normal(size=(60, 6)).astype(np.float32)
    rows[50] = rows[3, ::-1]  # a row reversed is another row, not a mirrored copy
    table = find_pairs(torch.from_numpy(rows).reshape(60, 6, 1, 1))
    assert (3, 50) not in _found(table) and not table["mirrored"].any()
    x = _images(20, seed=8)
    x[12] = _flip(x[4])
    x[13] = x[2]
    exact = find_pairs(torch.from_numpy(x), mode="exact")
    assert _found(exact) == {(2, 13): False}  # a byte-equal mirror is for the near search only
    assert _found(find_pairs(torch.from_numpy(x))) == {(2, 13): False, (4, 12): True}



def test_searches_mirrors_says_which_searches_double() -> None:
    """The suspects task sizes the near search before training: images count two searches."""
    assert searches_mirrors(torch.zeros(5, 3, 32, 32, dtype=torch.uint8))
    assert searches_mirrors(torch.zeros(5, 28, 28))
    assert not searches_mirrors(torch.zeros(5, 13, 1, 1))  # a table
    assert not searches_mirrors(torch.zeros(5, 16, 1, 1, dtype=torch.int64))  # token ids
    assert not searches_mirrors(torch.zeros(5, 64))  # flattened: no width to flip
