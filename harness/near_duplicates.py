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
are always found, in every mode, at distance 0 (and only they: a near copy reports at least
`NEAR_FLOOR`, also one whose pixels correlate perfectly, as a brightness change does), each paired
with the first of its copies (m copies: m - 1 pairs, not m(m - 1)/2).

A test split is searched against the training samples with the same features and radius (the
training set's median nearest-neighbour distance; a table standardised by the training set's
statistics): a test sample with a copy among the training samples measures memorization, not
generalisation (ciFAIR counted 3.3 % of CIFAR-10's test images so). Each test sample pairs with
the training samples within the radius among its k nearest, an exact copy with the first of them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

#: Datalab's defaults: the relative threshold and the neighbours looked at per sample.
THRESHOLD = 0.13
NEIGHBOURS = 10
MODES = ("near", "exact", "off")
COLUMNS = ["a", "b", "distance"]
TEST_COLUMNS = ["test", "train", "distance"]
#: The least distance a near pair reports: 0 is kept for exact (byte-equal) copies, and a brightness or
#: contrast change correlates perfectly (1 - cos rounded to 0 for half of such copies).
NEAR_FLOOR = 1e-9


def find_pairs(x: torch.Tensor, mode: str = "near", threshold: float = THRESHOLD,
               k: int = NEIGHBOURS) -> pd.DataFrame:
    """Pairs (a < b) of duplicated samples with their distance (0: exact copies), closest first.
    `x` is the training set as the dataset holds it; integer token ids get exact copies only."""
    return find_duplicates(x, None, mode, threshold, k)[0]


def find_duplicates(x: torch.Tensor, x_test: torch.Tensor | None, mode: str = "near", threshold: float = THRESHOLD,
                    k: int = NEIGHBOURS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training set's duplicate pairs (`find_pairs`) and the test samples' copies among the
    training samples (test, train, distance; closest first), from one search of the training set."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rows = _flat(x)
    test_rows = _flat(x_test) if x_test is not None and len(x_test) else rows[:0]
    if mode == "off" or len(rows) < 2:
        return _frame({}, COLUMNS), _frame({}, TEST_COLUMNS)
    first = _first_copy(np.concatenate([rows, test_rows]) if len(test_rows) else rows)
    n = len(rows)
    pairs = {(int(f), int(i)): 0.0 for i, f in enumerate(first[:n]) if f != i}
    copies = {(int(j), int(f)): 0.0 for j, f in enumerate(first[n:]) if f < n}  # the first training copy
    if mode == "near" and rows.dtype.kind in "fu":  # token ids (int64): exact copies only
        # float features are a table; so are 1 to 3 values of any kind (a correlation of so few is meaningless)
        tabular = x.dim() == 4 and tuple(x.shape[2:]) == (1, 1) and (rows.dtype.kind == "f" or rows.shape[1] <= 3)
        channels = 1 if tabular or x.dim() != 4 else int(x.shape[1])
        space = _space(rows, first[:n], tabular, channels)
        if space is not None:
            for a, b, d in space.within(threshold, k):
                pairs.setdefault((a, b), d)
            if len(test_rows):
                for j, i, d in space.across(test_rows, threshold, k):
                    copies.setdefault((j, i), d)
    return _frame(pairs, COLUMNS), _frame(copies, TEST_COLUMNS)


def _flat(x: torch.Tensor) -> np.ndarray:
    return np.asarray(x.detach().cpu().reshape(len(x), -1).numpy())


def _frame(pairs: dict[tuple[int, int], float], columns: list[str]) -> pd.DataFrame:
    """Pairs as a table, closest first (ties in index order)."""
    table = pd.DataFrame([(a, b, d) for (a, b), d in pairs.items()], columns=columns)
    table = table.astype({columns[0]: np.int64, columns[1]: np.int64, "distance": float})
    return table.sort_values(["distance", *columns[:2]], kind="stable").reset_index(drop=True)


def _first_copy(rows: np.ndarray) -> np.ndarray:
    """For each sample the lowest index holding exactly the same values (itself when unique)."""
    _, group = np.unique(np.ascontiguousarray(rows), axis=0, return_inverse=True)
    group = group.reshape(-1)
    first = np.full(group.max() + 1, len(rows), dtype=np.int64)
    np.minimum.at(first, group, np.arange(len(rows)))
    return first[group]


#: rows -> (their features, the rows kept: constant images have no correlation with anything)
Features = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


@dataclass
class _Space:
    """The unique training samples as the search compares them, and their neighbours."""

    features: np.ndarray
    keep: np.ndarray  # the training index of each row of `features`
    metric: str
    featurize: Features  # how any other rows (a test split) are compared with them
    radius: float = float("nan")

    def within(self, threshold: float, k: int) -> list[tuple[int, int, float]]:
        """Pairs within `threshold` x the median nearest-neighbour distance among the unique samples
        (an exact copy would pull that median to 0); sets the radius `across` uses."""
        distance, neighbour = self._neighbours(self.features, min(k + 1, len(self.keep)))
        self_hit = neighbour == np.arange(len(self.keep))[:, None]
        distance[self_hit] = np.inf  # the sample itself, wherever the ties put it
        self.radius = threshold * float(np.median(distance.min(axis=1)))
        i, j = np.nonzero(distance <= self.radius)
        a, b = self.keep[i], self.keep[neighbour[i, j]]
        return [(int(min(p, q)), int(max(p, q)), max(float(d), NEAR_FLOOR)) for p, q, d in zip(a, b, distance[i, j])]

    def across(self, rows: np.ndarray, threshold: float, k: int) -> list[tuple[int, int, float]]:
        """(row, training sample, distance) within the radius `within` set, among each row's k nearest."""
        if np.isnan(self.radius):
            self.within(threshold, k)
        features, kept = self.featurize(rows)
        if not len(kept):
            return []
        distance, neighbour = self._neighbours(features, min(k, len(self.keep)))
        i, j = np.nonzero(distance <= self.radius)
        return [(int(t), int(self.keep[m]), max(float(d), NEAR_FLOOR))
                for t, m, d in zip(kept[i], neighbour[i, j], distance[i, j])]

    def _neighbours(self, queries: np.ndarray, count: int) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.neighbors import NearestNeighbors  # ~1.5 s of imports: paid by the first search

        search = NearestNeighbors(n_neighbors=count, metric=self.metric).fit(self.features)
        distance, neighbour = search.kneighbors(queries)
        return np.maximum(distance, 0.0), neighbour  # 1 - cos can round to just below 0


def _space(rows: np.ndarray, first: np.ndarray, table: bool, channels: int) -> _Space | None:
    """The unique training samples as features: images as 1 - correlation, a table's rows by
    Euclidean distance between standardised features; None when fewer than two remain."""
    unique = first == np.arange(len(rows))
    if table:
        featurize, metric = _standardised(rows), "euclidean"
    else:
        featurize, metric = _centred(channels), "cosine"
    features, kept = featurize(rows)
    keep = np.flatnonzero(unique[kept]) if len(kept) else kept
    features, keep = features[keep], kept[keep]
    return _Space(features, keep, metric, featurize) if len(keep) >= 2 else None


def _centred(channels: int) -> Features:
    """Each sample with each colour channel centred on its own, scaled to unit norm, for the cosine
    metric (scikit-learn computes it as one matrix product per chunk, 3x faster than its euclidean);
    constant samples left out. Centring the whole image left a blue sky's blue: on CIFAR-10, 14 of
    its 124 pairs were different birds and airplanes in a plain sky, all 9 pairs with different labels
    among them; centred per channel, none of 150 (results/cifar10-suspects-cpu)."""
    def featurize(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features: np.ndarray = rows.astype(np.float32).reshape(len(rows), channels, -1)  # then flattened to 2-D
        features -= features.mean(axis=2, keepdims=True)
        features = features.reshape(len(rows), -1)
        norm = np.linalg.norm(features, axis=1)
        kept = np.flatnonzero(norm > 1e-6 * max(float(norm.max()), 1e-30))
        return features[kept] / norm[kept, None], kept

    return featurize


def _standardised(train: np.ndarray) -> Features:
    """Rows with every feature standardised by the training set's mean and spread, for the Euclidean
    metric. A feature that never varies in training weighs nothing, for test rows too: it has no
    spread to measure a difference in, and in its raw units it would outweigh every other feature.
    Clipped: a test row 1e38 spreads away is far, not infinite (sklearn refuses inf)."""
    mean = train.mean(axis=0, dtype=np.float64)
    spread = train.std(axis=0, dtype=np.float64)
    f32 = np.finfo(np.float32)  # a spread below float32's resolution of the mean is rounding, not variation
    varies = spread > np.maximum(np.abs(mean) * f32.eps, f32.tiny)
    weight = np.where(varies, 1.0 / np.where(varies, spread, 1.0), 0.0).astype(np.float32)  # at most 1 / tiny
    centre = mean.astype(np.float32)

    def featurize(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(over="ignore"):
            features = (rows - centre) * weight
        return np.clip(features, -1e18, 1e18, out=features), np.arange(len(rows))

    return featurize
