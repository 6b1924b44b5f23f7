"""Duplicate pairs among the training samples (harness.near_duplicates): exact copies on hand-built
cases, near copies against an independent brute-force computation of the rule and against
cleanlab Datalab's own near-duplicate check, and the cases the centring is there for."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from harness.near_duplicates import THRESHOLD, find_pairs


def _images(n: int, seed: int = 0, shape: tuple[int, ...] = (3, 8, 8)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def _pairs(table: pd.DataFrame) -> set[tuple[int, int]]:
    return set(zip(table["a"].tolist(), table["b"].tolist()))


def test_exact_copies_pair_with_their_first_copy_at_distance_zero() -> None:
    x = _images(12)
    x[3] = x[0]
    x[5] = x[0]
    x[9] = x[7]
    table = find_pairs(torch.from_numpy(x), mode="exact")
    assert table.to_dict("list") == {"a": [0, 0, 7], "b": [3, 5, 9], "distance": [0.0, 0.0, 0.0],
                                        "mirrored": [False, False, False], "shifted": [False, False, False]}


def test_near_copies_are_found_and_unrelated_images_are_not() -> None:
    x = _images(200)
    rng = np.random.default_rng(1)
    x[10] = np.clip(x[4].astype(int) + rng.integers(-6, 7, x[4].shape), 0, 255)  # re-encoded
    x[20] = (x[8] * 0.7 + 30).astype(np.uint8)  # darker, less contrast: correlation ~1
    x[30] = x[6]  # exact
    table = find_pairs(torch.from_numpy(x))
    assert _pairs(table) == {(4, 10), (8, 20), (6, 30)}
    assert table.iloc[0].tolist() == [6, 30, 0.0, False, False]  # closest first
    assert (table["distance"] < 0.01).all()
    assert _pairs(find_pairs(torch.from_numpy(x), mode="exact")) == {(6, 30)}
    assert find_pairs(torch.from_numpy(x), mode="off").empty


def test_plain_backgrounds_of_any_brightness_are_not_duplicates() -> None:
    """Uncentred, every image of a bright plain background is 'near' every other (cosine ~1);
    centred, only real copies stay near. Constant images have no correlation: exact copies only."""
    x = _images(100)
    rng = np.random.default_rng(2)
    for i in range(40, 60):  # a bright sky with a small, different object in each
        x[i] = 200
        r, c = rng.integers(0, 6, 2)
        x[i, :, r:r + 2, c:c + 2] = rng.integers(0, 256, (3, 2, 2))
    x[60], x[61], x[62] = 0, 255, 0  # constant: black, white, black
    table = find_pairs(torch.from_numpy(x))
    assert _pairs(table) == {(60, 62)}


def test_token_ids_pair_only_exact_copies() -> None:
    ids = torch.randint(1, 500, (50, 16, 1, 1))
    ids[7] = ids[3]
    ids[9] = ids[2]
    ids[9, 0] += 1  # one token differs: no distance between token ids means anything
    assert _pairs(find_pairs(ids)) == {(3, 7)}


def test_the_rule_matches_a_brute_force_computation() -> None:
    """Pairs among each sample's 10 nearest with 1 - Pearson correlation <= 0.13 x the median distance
    of the samples to their nearest neighbour, computed here from the full correlation matrix."""
    x = _images(300, seed=3, shape=(1, 6, 6)).astype(np.float32)
    rng = np.random.default_rng(4)
    for a, b in rng.choice(300, (15, 2), replace=False):  # copies with growing noise
        x[b] = x[a] + rng.normal(0, rng.uniform(5, 60), x[a].shape)
    x = np.clip(x, 0, 255).astype(np.uint8)
    table = find_pairs(torch.from_numpy(x))

    flat = x.reshape(300, -1).astype(np.float64)
    distance = 1 - np.corrcoef(flat)
    np.fill_diagonal(distance, np.inf)
    order = np.argsort(distance, axis=1, kind="stable")[:, :10]
    radius = THRESHOLD * np.median(distance.min(axis=1))
    expected = {(min(i, j), max(i, j)) for i in range(300) for j in order[i] if distance[i, j] <= radius}
    assert 3 <= len(expected) < 15  # the rule keeps the close copies, not the noisy ones
    assert _pairs(table) == expected
    for a, b, d, *_ in table.itertuples(index=False):
        assert d == pytest.approx(distance[a, b], abs=1e-5)


def test_the_pairs_are_cleanlab_datalabs_near_duplicates() -> None:
    """On channel-centred, unit-norm features Datalab's near-duplicate sets are the same pairs."""
    pytest.importorskip("datasets")  # Datalab needs Hugging Face datasets (the hf extra)
    from cleanlab import Datalab

    x = _images(400, seed=5, shape=(3, 4, 4)).astype(np.float32)
    rng = np.random.default_rng(6)
    for a, b in rng.choice(400, (20, 2), replace=False):
        x[b] = x[a] + rng.normal(0, rng.uniform(2, 40), x[a].shape)
    x = np.clip(x, 0, 255).astype(np.uint8)
    features = x.reshape(400, 3, -1).astype(np.float64)
    features -= features.mean(axis=2, keepdims=True)  # each colour channel centred on its own
    features = features.reshape(400, -1)
    features /= np.linalg.norm(features, axis=1, keepdims=True)
    lab = Datalab(data={"label": np.zeros(400, dtype=int)}, label_name="label", verbosity=0)
    lab.find_issues(features=features, issue_types={"near_duplicate": {"metric": "cosine"}})
    sets = lab.get_issues("near_duplicate")["near_duplicate_sets"]
    expected = {(min(i, int(j)), max(i, int(j))) for i, s in enumerate(sets) for j in s}
    assert len(expected) >= 5
    assert _pairs(find_pairs(torch.from_numpy(x))) == expected


def test_a_bad_mode_is_an_error() -> None:
    with pytest.raises(ValueError, match="mode must be one of"):
        find_pairs(torch.zeros(3, 1, 2, 2, dtype=torch.uint8), mode="nearr")


def test_different_pictures_under_one_strong_colour_cast_are_not_duplicates() -> None:
    """Centred as a whole, images sharing a colour (a blue sky: red low, blue high) correlate through
    that colour alone, whatever they show (on CIFAR-10, all 9 pairs with different labels were
    different birds and airplanes in a plain sky): each colour channel is centred on its own."""
    rng = np.random.default_rng(7)
    x = _images(150, seed=8)
    for i in range(60, 90):  # blue-sky images: a shared cast, a shade of their own, faint content of their own
        cast = np.array([90, 140, 230])[:, None, None] + rng.integers(-15, 16)
        x[i] = np.clip(cast + rng.integers(-20, 21, (3, 8, 8)), 0, 255)
    x[149] = np.clip(x[75].astype(int) + rng.integers(-2, 3, x[75].shape), 0, 255)  # one real copy
    x[148] = np.clip(x[80].astype(int) + np.array([25, -10, -20])[:, None, None], 0, 255)  # recoloured copy
    assert _pairs(find_pairs(torch.from_numpy(x))) == {(75, 149), (80, 148)}
