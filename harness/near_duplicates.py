"""Near-duplicate pairs among the training samples: the duplicates half of finding bad samples in
real data, written beside the suspects.

The duplicates task injects a copy of an image under another label, which CSL flags (methods.md);
in a user's data the copies are rarely exact (re-encoded, re-cropped, brightened), so pairs are
found by distance, with cleanlab Datalab's near-duplicate rule: a pair is near when its distance is
below `threshold` times the median distance of the samples to their nearest neighbour, looking at
each sample's k nearest. The neighbours come from scikit-learn's NearestNeighbors; Datalab itself
needs Hugging Face `datasets`, which only the `hf` extra installs.

Images (and every uint8 array) are compared as each sample's values flattened, each colour channel
centred on its own, and scaled to unit norm, so the distance is 1 - the correlation of the two
samples' pixels. Uncentred, every image of a plain bright background is near every other (on
CIFAR-10, sets of 30+ sky images); centred as a whole, a blue sky with a bird stayed near a blue
sky with an airplane; centred per channel, what stays near is the same picture. A constant sample
has no correlation with anything: it is matched by exact copies only.

Float features (N, D, 1, 1: an `npz:` table, and uint8 ones with D <= 3) are not pixels on one
scale: a correlation across a row's features mixes units (wine's proline, ~1,000, outweighs its
hue, ~1) and is degenerate for D <= 3 (with D = 2 every row correlates +-1 with every other:
thousands of false pairs at distance 0). They are standardised per feature, as the model sees
them, and compared by Euclidean distance in standard deviations (Datalab's rule with the Euclidean
metric): on wine and breast-cancer with 20 rows re-measured (another row plus 2 % of each
feature's spread), 20 of 20 are found and nothing else, where the correlation found 12 and 3 with
9 and 1 false pairs (tests/test_suspects_review5.py). Images saved flattened as floats (N, H*W)
are such a table, as they are to the model; saved (N, H, W) they are compared as pixels.

Token ids (text) have no meaningful distance, so there only exact copies are found. Exact copies
are always found, in every mode, at distance 0, each paired with the first of its copies (m
copies: m - 1 pairs, not m(m - 1)/2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

#: Datalab's defaults: the relative threshold and the neighbours looked at per sample.
THRESHOLD = 0.13
NEIGHBOURS = 10
MODES = ("near", "exact", "off")
COLUMNS = ["a", "b", "distance"]


def find_pairs(x: torch.Tensor, mode: str = "near", threshold: float = THRESHOLD,
               k: int = NEIGHBOURS) -> pd.DataFrame:
    """Pairs (a < b) of duplicated samples with their distance (0: exact copies), closest first.
    `x` is the training set as the dataset holds it; integer token ids get exact copies only."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rows = np.asarray(x.detach().cpu().reshape(len(x), -1).numpy())
    if mode == "off" or len(rows) < 2:
        return pd.DataFrame({c: pd.Series(dtype=float if c == "distance" else np.int64) for c in COLUMNS})
    first = _first_copy(rows)
    pairs = {(int(f), int(i)): 0.0 for i, f in enumerate(first) if f != i}
    if mode == "near" and rows.dtype.kind in "fu":  # token ids (int64): exact copies only
        # float features are a table; so are 1 to 3 values of any kind (a correlation of so few is meaningless)
        tabular = x.dim() == 4 and tuple(x.shape[2:]) == (1, 1) and (rows.dtype.kind == "f" or rows.shape[1] <= 3)
        channels = 1 if tabular or x.dim() != 4 else int(x.shape[1])
        for a, b, d in _near(rows, first, threshold, k, tabular, channels):
            pairs.setdefault((a, b), d)
    table = pd.DataFrame([(a, b, d) for (a, b), d in pairs.items()], columns=COLUMNS)
    table = table.astype({"a": np.int64, "b": np.int64, "distance": float})
    return table.sort_values(["distance", "a", "b"], kind="stable").reset_index(drop=True)


def _first_copy(rows: np.ndarray) -> np.ndarray:
    """For each sample the lowest index holding exactly the same values (itself when unique)."""
    _, group = np.unique(np.ascontiguousarray(rows), axis=0, return_inverse=True)
    group = group.reshape(-1)
    first = np.full(group.max() + 1, len(rows), dtype=np.int64)
    np.minimum.at(first, group, np.arange(len(rows)))
    return first[group]


def _near(rows: np.ndarray, first: np.ndarray, threshold: float, k: int,
          table: bool = False, channels: int = 1) -> list[tuple[int, int, float]]:
    """Pairs within `threshold` x the median nearest-neighbour distance among the unique samples (an
    exact copy would pull that median to 0): images as 1 - correlation (constant ones left out), a
    table's rows by Euclidean distance between standardised features."""
    features, keep, metric = _standardised(rows, first) if table else _centred(rows, first, channels)
    if len(keep) < 2:
        return []
    n_neighbours = min(k + 1, len(keep))
    from sklearn.neighbors import NearestNeighbors  # ~1.5 s of imports: paid by the first search

    distance, neighbour = NearestNeighbors(n_neighbors=n_neighbours, metric=metric).fit(features).kneighbors(features)
    distance = np.maximum(distance, 0.0)  # 1 - cos can round to just below 0
    self_hit = neighbour == np.arange(len(keep))[:, None]
    distance[self_hit] = np.inf  # the sample itself, wherever the ties put it
    nearest = distance.min(axis=1)
    radius = threshold * float(np.median(nearest))
    i, j = np.nonzero(distance <= radius)
    a, b = keep[i], keep[neighbour[i, j]]
    return [(int(min(p, q)), int(max(p, q)), float(d)) for p, q, d in zip(a, b, distance[i, j])]


def _centred(rows: np.ndarray, first: np.ndarray, channels: int = 1) -> tuple[np.ndarray, np.ndarray, str]:
    """The unique, non-constant samples with each colour channel centred on its own, scaled to unit
    norm, for the cosine metric (scikit-learn computes it as one matrix product per chunk, 3x faster
    than its euclidean). Centring the whole image left a blue sky's blue: on CIFAR-10, 14 of its 124
    pairs were different birds and airplanes in a plain sky, all 9 pairs with different labels among
    them; centred per channel, none of 150 (results/cifar10-suspects-cpu)."""
    features: np.ndarray = rows.astype(np.float32).reshape(len(rows), channels, -1)  # then flattened to 2-D
    features -= features.mean(axis=2, keepdims=True)
    features = features.reshape(len(rows), -1)
    norm = np.linalg.norm(features, axis=1)
    keep = np.flatnonzero((first == np.arange(len(rows))) & (norm > 1e-6 * max(float(norm.max()), 1e-30)))
    return features[keep] / norm[keep, None], keep, "cosine"


def _standardised(rows: np.ndarray, first: np.ndarray) -> tuple[np.ndarray, np.ndarray, str]:
    """The unique rows of a table with every feature standardised over all samples (a feature that
    never varies adds nothing), for the Euclidean metric."""
    keep = np.flatnonzero(first == np.arange(len(rows)))
    spread = rows.std(axis=0, dtype=np.float64)
    scale = np.where(spread > 0, spread, 1.0).astype(np.float32)
    return (rows[keep] - rows.mean(axis=0, dtype=np.float64).astype(np.float32)) / scale, keep, "euclidean"
