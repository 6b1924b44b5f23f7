"""Near-duplicate search on odd inputs, from the attack on the mirrored search (attack23)."""

from __future__ import annotations

import numpy as np
import torch

from harness.near_duplicates import NEAR_FLOOR, find_pairs, searches_mirrors


def test_uint8_rows_saved_flattened_find_their_near_copies() -> None:
    """An npz (N, D) uint8 array (images saved flattened, as MNIST often is) loads as (N, D, 1, 1).
    Centred per 'channel', each of its D one-pixel channels became 0: every sample was constant and
    only exact copies were found. Compared as one channel, a re-brightened copy is found."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 200, (50, 64)).astype(np.uint8)
    x[7] = x[3] + 1  # re-brightened: correlates perfectly
    x[9] = x[4]  # exact
    x[12] = np.clip(x[5].astype(int) + rng.integers(-3, 4, 64), 0, 255).astype(np.uint8)  # re-encoded
    pairs = find_pairs(torch.from_numpy(x[:, :, None, None]))
    assert not searches_mirrors(torch.from_numpy(x[:, :, None, None]))
    found = {(int(a), int(b)): float(d) for a, b, d in zip(pairs["a"], pairs["b"], pairs["distance"])}
    assert set(found) == {(4, 9), (3, 7), (5, 12)}
    assert found[(4, 9)] == 0.0 and found[(3, 7)] == NEAR_FLOOR and 0 < found[(5, 12)] < 0.01
    assert not pairs["mirrored"].any()
    # the same values as a one-row image (N, 1, 1, D) were already compared so: the same pairs
    same = find_pairs(torch.from_numpy(x[:, None, None, :].copy()))
    assert {(int(a), int(b)) for a, b in zip(same["a"], same["b"])} == set(found)
