"""Near-duplicate pairs among the training samples: the duplicates half of finding bad samples in
real data, written beside the suspects.

The duplicates task injects a copy of an image under another label, which CSL flags (methods.md);
in a user's data the copies are rarely exact (re-encoded, re-cropped, brightened), so pairs are
found by distance, with cleanlab Datalab's near-duplicate rule: a pair is near when its distance is
below `threshold` times the median distance of the samples to their nearest neighbour, looking at
each sample's k nearest. The neighbours come from scikit-learn's NearestNeighbors; Datalab itself
needs Hugging Face `datasets`, which only the `hf` extra installs.

The features are each sample's values flattened, centred and scaled to unit norm, so the distance
is 1 - the Pearson correlation of the two samples' pixels. Uncentred, every image of a plain bright
background is near every other (on CIFAR-10, sets of 30+ sky images); centred, what stays near is
the same picture. A constant sample has no correlation with anything: it is matched by exact
copies only. Token ids (text) have no meaningful distance either, so there only exact copies are
found. Exact copies are always found, in every mode, at distance 0, each paired with the first of
its copies (m copies: m - 1 pairs, not m(m - 1)/2).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from sklearn.neighbors import NearestNeighbors

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
        for a, b, d in _near(rows, first, threshold, k):
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


def _near(rows: np.ndarray, first: np.ndarray, threshold: float, k: int) -> list[tuple[int, int, float]]:
    """Pairs within `threshold` x the median nearest-neighbour distance among the unique, non-constant
    samples (an exact copy would pull that median to 0), as 1 - correlation."""
    features = rows.astype(np.float32)
    features -= features.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(features, axis=1)
    keep = np.flatnonzero((first == np.arange(len(rows))) & (norm > 1e-6 * max(float(norm.max()), 1e-30)))
    if len(keep) < 2:
        return []
    features = features[keep] / norm[keep, None]
    n_neighbours = min(k + 1, len(keep))
    # cosine: scikit-learn computes it as one matrix product per chunk, 3x faster than its euclidean
    distance, neighbour = NearestNeighbors(n_neighbors=n_neighbours, metric="cosine").fit(features).kneighbors(features)
    distance = np.maximum(distance, 0.0)  # 1 - cos, which rounding can take just below 0
    self_hit = neighbour == np.arange(len(keep))[:, None]
    distance[self_hit] = np.inf  # the sample itself, wherever the ties put it
    nearest = distance.min(axis=1)
    radius = threshold * float(np.median(nearest))
    i, j = np.nonzero(distance <= radius)
    a, b = keep[i], keep[neighbour[i, j]]
    return [(int(min(p, q)), int(max(p, q)), float(d)) for p, q, d in zip(a, b, distance[i, j])]
