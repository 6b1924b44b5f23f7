"""Near-duplicate pairs among the training samples: the duplicates half of finding bad samples in
real data, written beside the suspects.

The duplicates task injects a copy of an image under another label, which CSL flags (methods.md);
in a user's data the copies are rarely exact (re-encoded, brightened, mirrored), so pairs are
found by distance, with cleanlab Datalab's near-duplicate rule: a pair is near when its distance is
below `threshold` times the median distance of the samples to their nearest neighbour, looking at
each sample's k nearest. The neighbours come from scikit-learn's NearestNeighbors; Datalab itself
needs Hugging Face `datasets`, which only the `hf` extra installs.

Images (and every uint8 array) are compared as each sample's values flattened, each colour channel
centred on its own, and scaled to unit norm, so the distance is 1 - the correlation of the two
samples' pixels. Uncentred, every image of a plain bright background is near every other (on
CIFAR-10, sets of 30+ sky images); centred as a whole, a blue sky with a bird stayed near a blue
sky with an airplane; centred per channel, what stays near is the same picture. A constant sample
(or one with a NaN or infinite value) has no correlation with anything: it is matched by exact
copies only.

Float features (N, D, 1, 1: an `npz:` table, and uint8 ones with D <= 3) are not pixels on one
scale: a correlation across a row's features mixes units (wine's proline, ~1,000, outweighs its
hue, ~1) and is degenerate for D <= 3 (with D = 2 every row correlates +-1 with every other:
thousands of false pairs at distance 0). They are standardised per feature, as the model sees
them, and compared by Euclidean distance in standard deviations (Datalab's rule with the Euclidean
metric): on wine and breast-cancer with 20 rows re-measured (another row plus 2 % of each
feature's spread), 20 of 20 are found and nothing else, where the correlation found 12 and 3 with
9 and 1 false pairs (tests/test_suspects_review5.py). Images saved flattened as floats (N, H*W)
are such a table, as they are to the model; saved (N, H, W) they are compared as pixels, and so are
uint8 rows of more than 3 values (N, D, 1, 1: images saved flattened as uint8), centred as one channel.

Pixels are compared where they lie, so a copy shifted or re-cropped by a pixel or two correlates no
better with its original than another photograph does. Images at least 16 pixels a side are searched
a third way for such copies (`harness.near_duplicates_shifted`): candidates by a small averaged picture,
kept when the interiors correlate within the same radius at a shift of up to 2 pixels. A pair only that
search finds is marked `shifted` and reports its interiors' distance; one found plain or mirrored
keeps that. Mirrors are searched shifted too (a random crop and flip): such a pair is marked both.
A copy cropped and resized back (a scale change) or flipped upside down is still not found
(docs/reading-results.md has the counts).

Token ids (text) have no meaningful distance, so there only exact copies are found. Exact copies
are always found, in every mode, at distance 0 (and only they: a near copy reports at least
`NEAR_FLOOR`, also one whose pixels correlate perfectly, as a brightness change does), each paired
with the first of its copies (m copies: m - 1 pairs, not m(m - 1)/2).

A test split is searched against the training samples with the same features and radius (the
training set's median nearest-neighbour distance; a table standardised by the training set's
statistics): a test sample with a copy among the training samples measures memorization, not
generalisation (ciFAIR counted 3.3 % of CIFAR-10's test images so). Each test sample pairs with
the training samples within the radius among its k nearest, an exact copy with the first of them.

Images (N, C, H, W) and (N, H, W) at least two pixels wide are also searched mirrored: a horizontally
flipped copy, common in scraped data and in train/test leakage, does not correlate with its original.
Each sample's mirror is searched against the samples (a test sample's against the training samples)
by the same rule: among its k nearest, within the radius, which stays the plain search's (the
median nearest-neighbour distance without mirrors), so the plain pairs do not move. A pair found
both ways is kept once, at the smaller distance (plain within `MIRROR_TIE`), and the `mirrored`
column says which. A sample is never paired with its own mirror (a symmetric image is its own mirror). This
doubles the near search's cost (two N x N searches instead of one; the test split's likewise).
Tables, token ids, images flattened to (N, D) and the exact search have no mirrors: a byte-equal
mirror is found by the near search only, at `NEAR_FLOOR`, not at 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from harness.near_duplicates_shifted import ShiftHits, searches_shifts, shifted_across, shifted_within

#: Datalab's defaults: the relative threshold and the neighbours looked at per sample.
THRESHOLD = 0.13
NEIGHBOURS = 10
MODES = ("near", "exact", "off")
COLUMNS = ["a", "b", "distance", "mirrored", "shifted"]
TEST_COLUMNS = ["test", "train", "distance", "mirrored", "shifted"]
#: The least distance a near pair reports: 0 is kept for exact (byte-equal) copies, and a brightness or
#: contrast change correlates perfectly (1 - cos rounded to 0 for half of such copies).
NEAR_FLOOR = 1e-9
#: Bytes of float32 features mirrored at a time (a block of rows; at least one): 8,192 CIFAR-10 images, as
#: the block of 8,192 rows before, 167 of 224 x 224. That block held 8,192 x 600 KB = 4.6 GiB of 224 x 224
#: images, twice with scikit-learn's normalised copy of it (`harness.search_memory`).
MIRROR_BYTES = 96 * 2**20
#: How much closer a mirrored find must be to replace a plain one: a symmetric image's copy is as close
#: both ways, and float32 rounding (1e-7 to 1e-6 on 3,072 values) would pick either.
MIRROR_TIE = 1e-5

#: (a, b) or (test, train) -> (distance, mirrored)
Found = dict[tuple[int, int], tuple[float, bool]]
#: (a, b, distance, mirrored) as a search reports them, a pair possibly more than once
Hits = list[tuple[int, int, float, bool]]


def find_pairs(x: torch.Tensor, mode: str = "near", threshold: float = THRESHOLD,
               k: int = NEIGHBOURS) -> pd.DataFrame:
    """Pairs (a < b) of duplicated samples with their distance (0: exact copies) and whether one is
    the other's mirror, closest first. `x` is the training set as the dataset holds it; integer token
    ids get exact copies only."""
    return find_duplicates(x, None, mode, threshold, k)[0]


def find_duplicates(x: torch.Tensor, x_test: torch.Tensor | None, mode: str = "near", threshold: float = THRESHOLD,
                    k: int = NEIGHBOURS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training set's duplicate pairs (`find_pairs`) and the test samples' copies among the
    training samples (test, train, distance, mirrored; closest first), from one search of the
    training set."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    rows = _flat(x)
    test_rows = _flat(x_test) if x_test is not None and len(x_test) else rows[:0]
    if mode == "off" or len(rows) < 2:
        return _frame({}, set(), COLUMNS), _frame({}, set(), TEST_COLUMNS)
    first = _first_copy(np.concatenate([rows, test_rows]) if len(test_rows) else rows)
    n = len(rows)
    pairs: Found = {(int(f), int(i)): (0.0, False) for i, f in enumerate(first[:n]) if f != i}
    copies: Found = {(int(j), int(f)): (0.0, False) for j, f in enumerate(first[n:]) if f < n}  # the first one
    shifted: set[tuple[int, int]] = set()  # the pairs found only shifted (`harness.near_duplicates_shifted`)
    shifted_copies: set[tuple[int, int]] = set()
    if mode == "near" and rows.dtype.kind in "fu":  # token ids (int64): exact copies only
        tabular = searches_table(x)
        # (N, D, 1, 1) is one flattened sample (uint8 with D > 3: images saved flattened), not D one-pixel
        # channels: centred per channel, every value was 0 and no near copy was ever found
        channels = 1 if tabular or x.dim() != 4 or tuple(x.shape[2:]) == (1, 1) else int(x.shape[1])
        space = _space(rows, first[:n], tabular, channels, _mirror_order(x))
        if space is not None:
            _keep_closest(pairs, space.within(threshold, k))
            if len(test_rows):
                _keep_closest(copies, space.across(test_rows, threshold, k))
            if not tabular and searches_shifts(x):  # found plain or mirrored, a pair keeps that distance
                images = rows.reshape(n, -1, *x.shape[-2:])
                _keep_new(pairs, shifted, shifted_within(images, space.keep, space.radius, k))
                if len(test_rows):
                    tests = test_rows.reshape(len(test_rows), *images.shape[1:])
                    _keep_new(copies, shifted_copies, shifted_across(tests, images, space.keep, space.radius, k))
    return _frame(pairs, shifted, COLUMNS), _frame(copies, shifted_copies, TEST_COLUMNS)


def _flat(x: torch.Tensor) -> np.ndarray:
    return np.asarray(x.detach().cpu().reshape(len(x), -1).numpy())


def searches_values(x: torch.Tensor) -> bool:
    """Whether the near search compares `x`'s values (floats, uint8 pixels): token ids have no
    distance, so they get exact copies only. A caller that sizes the search asks this first."""
    return x.dtype.is_floating_point or x.dtype == torch.uint8


def searches_table(x: torch.Tensor) -> bool:
    """Whether the near search compares `x` as a table (standardised features, Euclidean distance):
    float features (N, D, 1, 1); so are 1 to 3 values of any kind (a correlation of so few is meaningless)."""
    return x.dim() == 4 and tuple(x.shape[2:]) == (1, 1) and (x.dtype.is_floating_point or x.shape[1] <= 3)


def searches_mirrors(x: torch.Tensor) -> bool:
    """Whether the near search also compares the samples' mirrors, which doubles its cost: images
    (N, C, H, W) or (N, H, W) at least two pixels wide (tables, (N, D, 1, 1), and token ids are one
    value wide). A caller that sizes the search before running it counts it twice where this is True."""
    return x.dim() in (3, 4) and x.shape[-1] >= 2 and searches_values(x)


def mirror_rows(values: int) -> int:
    """Queries mirrored per block: `MIRROR_BYTES` of float32 features of `values` each, at least one.
    By bytes, not rows: a fixed count of large images held gigabytes. The pairs do not depend on it; a
    mirrored distance may move by float32 rounding (~1e-7: the matrix product rounds by its shape, as
    with scikit-learn's own chunks), so CIFAR-10's block stays the 8,192 images it always was."""
    return max(1, MIRROR_BYTES // (4 * max(1, values)))


def _mirror_order(x: torch.Tensor) -> np.ndarray | None:
    """The order of a flattened sample's values that flips it left to right (its last axis); None
    where `searches_mirrors` says there is no mirror."""
    if not searches_mirrors(x):
        return None
    return np.arange(int(np.prod(x.shape[1:]))).reshape(tuple(x.shape[1:]))[..., ::-1].reshape(-1)


def _keep_closest(found: Found, hits: Hits) -> None:
    """Each pair once, at its smaller distance: a copy found plain and mirrored, or from both ends,
    is one pair; within `MIRROR_TIE` the plain one (an exact copy, at 0, always wins)."""
    for a, b, d, mirrored in hits:
        old = found.get((a, b))
        if old is None or d + MIRROR_TIE * mirrored < old[0] + MIRROR_TIE * old[1]:
            found[(a, b)] = (d, mirrored)


def _keep_new(found: Found, shifted: set[tuple[int, int]], hits: ShiftHits) -> None:
    """The shifted finds of pairs no other search found (a test sample paired exactly or plain keeps
    that), each once at its least distance, shifted plain or mirrored as `_keep_closest` picks."""
    for a, b, d, mirrored in hits:
        old = found.get((a, b))
        if old is None or ((a, b) in shifted and d + MIRROR_TIE * mirrored < old[0] + MIRROR_TIE * old[1]):
            found[(a, b)] = (max(d, NEAR_FLOOR), mirrored)
            shifted.add((a, b))


def _frame(pairs: Found, shifted: set[tuple[int, int]], columns: list[str]) -> pd.DataFrame:
    """Pairs as a table, closest first (ties in index order)."""
    table = pd.DataFrame([(a, b, d, m, (a, b) in shifted) for (a, b), (d, m) in pairs.items()], columns=columns)
    table = table.astype({columns[0]: np.int64, columns[1]: np.int64, "distance": float, "mirrored": bool,
                          "shifted": bool})
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
    mirror: np.ndarray | None = None  # the feature order that flips an image (`_mirror_order`)
    radius: float = float("nan")

    def within(self, threshold: float, k: int) -> Hits:
        """Pairs within `threshold` x the median nearest-neighbour distance among the unique samples
        (an exact copy would pull that median to 0); sets the radius `across` uses. Then each
        sample's mirror against the samples, within the same radius, never against itself."""
        count = min(k + 1, len(self.keep))
        hits: Hits = []
        for mirrored in self._orientations():
            distance, neighbour = self._neighbours(self.features, count, mirrored)
            self_hit = neighbour == np.arange(len(self.keep))[:, None]
            distance[self_hit] = np.inf  # the sample itself (or its own mirror), wherever the ties put it
            distance[~self_hit.any(axis=1), -1] = np.inf  # k others: a mirror is rarely its own nearest
            if not mirrored:
                self.radius = threshold * float(np.median(distance.min(axis=1)))
            i, j = np.nonzero(distance <= self.radius)
            a, b = self.keep[i], self.keep[neighbour[i, j]]
            hits += [(int(min(p, q)), int(max(p, q)), max(float(d), NEAR_FLOOR), mirrored)
                     for p, q, d in zip(a, b, distance[i, j])]
        return hits

    def across(self, rows: np.ndarray, threshold: float, k: int) -> Hits:
        """(row, training sample, distance, mirrored) within the radius `within` set, among each row's
        k nearest, and among its mirror's k nearest for images."""
        if np.isnan(self.radius):
            self.within(threshold, k)
        features, kept = self.featurize(rows)
        if not len(kept):
            return []
        hits: Hits = []
        for mirrored in self._orientations():
            distance, neighbour = self._neighbours(features, min(k, len(self.keep)), mirrored)
            i, j = np.nonzero(distance <= self.radius)
            hits += [(int(t), int(self.keep[m]), max(float(d), NEAR_FLOOR), mirrored)
                     for t, m, d in zip(kept[i], neighbour[i, j], distance[i, j])]
        return hits

    def _orientations(self) -> tuple[bool, ...]:
        """Plain, then mirrored where there are mirrors: the plain search sets the radius."""
        return (False, True) if self.mirror is not None else (False,)

    def _neighbours(self, queries: np.ndarray, count: int, mirrored: bool) -> tuple[np.ndarray, np.ndarray]:
        """The `count` nearest samples of each query, or of each query's mirror (flipped a block of
        `mirror_rows` at a time: a mirrored copy of all 50,000 CIFAR-10 images would hold another 600 MB)."""
        from sklearn.neighbors import NearestNeighbors  # ~1.5 s of imports: paid by the first search

        search = NearestNeighbors(n_neighbors=count, metric=self.metric).fit(self.features)
        if not mirrored:
            distance, neighbour = search.kneighbors(queries)
        else:
            assert self.mirror is not None
            block = mirror_rows(queries.shape[1])
            parts = [search.kneighbors(queries[s:s + block][:, self.mirror]) for s in range(0, len(queries), block)]
            distance, neighbour = np.concatenate([d for d, _ in parts]), np.concatenate([n for _, n in parts])
        return np.maximum(distance, 0.0), neighbour  # 1 - cos can round to just below 0


def _space(rows: np.ndarray, first: np.ndarray, table: bool, channels: int,
           mirror: np.ndarray | None) -> _Space | None:
    """The unique training samples as features: images as 1 - correlation (and `mirror`, the order
    that flips one), a table's rows by Euclidean distance between standardised features; None when
    fewer than two remain."""
    unique = first == np.arange(len(rows))
    if table:
        featurize, metric = _standardised(rows), "euclidean"
    else:
        featurize, metric = _centred(channels), "cosine"
    features, kept = featurize(rows)
    keep = np.flatnonzero(unique[kept]) if len(kept) else kept
    features, keep = features[keep], kept[keep]
    return _Space(features, keep, metric, featurize, mirror) if len(keep) >= 2 else None


def _centred(channels: int) -> Features:
    """Each sample with each colour channel centred on its own, scaled to unit norm, for the cosine
    metric (scikit-learn computes it as one matrix product per chunk, 3x faster than its euclidean);
    constant samples left out. Centring the whole image left a blue sky's blue: on CIFAR-10, 14 of
    its 124 pairs were different birds and airplanes in a plain sky, all 9 pairs with different labels
    among them; centred per channel, none of 150 (187 with mirrors; results/cifar10-suspects-cpu/README.md)."""
    def featurize(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        features: np.ndarray = rows.astype(np.float32).reshape(len(rows), channels, -1)  # then flattened to 2-D
        features -= features.mean(axis=2, keepdims=True)
        features = features.reshape(len(rows), -1)
        norm = np.linalg.norm(features, axis=1)  # NaN for a sample with a NaN or infinite value: left out
        top = float(np.max(norm, initial=0.0, where=np.isfinite(norm)))  # one NaN's max left every sample out
        kept = np.flatnonzero(norm > 1e-6 * max(top, 1e-30))
        features = features[kept]
        features /= norm[kept, None]  # in place: a third copy of the features was the peak for large images
        return features, kept

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
