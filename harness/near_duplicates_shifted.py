"""Copies shifted by a pixel or two: the near search's third way of looking (`harness.near_duplicates`),
after plain and mirrored.

The plain search compares pixels where they lie, so a copy moved by a pixel, or re-cropped by one,
correlates with its original no better than another photograph does: among 3,000 CIFAR-10 images it
found none of 30 such copies per kind (below). Trying every shift of every pair would multiply the
search's N x N work by 25. Instead each image's interior (`REACH` pixels cut from each side) is
averaged down to `GRID` x `GRID` per channel, which barely moves when the image moves a pixel or two;
the k nearest by that small picture (centred per channel, cosine, as the plain search) are the
candidates, and a candidate pair is kept when the least 1 - correlation of one interior with the
other's moved by up to `REACH` pixels each way (either image moved) is within the plain search's
radius. Each image's mirror is searched the same way (a random crop and flip, the usual augmentation,
is both), so on CIFAR-10's 50,000 images that is 2 x N x N x 147 multiply-adds for the candidates (4.8 %
of the plain and mirrored searches' 2 x N x N x 3,072) and at most 2 x N x (k + 1) x 50 x 2,352 for the
check (0.9 %; more for large images and small N: k x 50 / N of the plain search's, 264 / N at k = 10).

Measured on the CIFAR-10 image folder (JPEG q75; 2026-12-05; docs/reading-results.md): 3 draws of
3,000 training images, each with 10 planted copies per kind, by `find_pairs`: shifted 1 pixel
diagonally 30 of 30, 1 pixel sideways 30, 2 pixels diagonally 28, shifted 1 pixel and re-saved at
quality 75 30; none of them found before. Cropped 1 pixel a side, resized back and re-saved 13 of 30
(8 found plain, 5 shifted: a scale change is reached only where it is slight); 2 pixels a side 1 of
30 (plain). The kinds found before stay found (mirrored 30 of 30). Other pairs: 5 in the 3 draws, 4
of them shifted: 3 the same photograph by eye, 1 two ships on a flat sea. On all 50,000 training
images (2026-12-05, at a1453df; the plain search's radius there 0.0443) `find_pairs` finds 438 pairs:
the 187 the plain and mirrored searches found and 251 found only shifted, 6 of them mirrored and
shifted. By eye 235 of the 251 are the same photograph moved, re-cropped, re-framed or recoloured (86
automobiles, mostly CIFAR-10's many shots of white cars); 10 are different photographs with a ship, 9
of them dark shapes on a flat sea horizon (1 under another label: a ship and an airplane); 6 are
doubtful. Copies both mirrored and shifted by up to 2 pixels: 12 of 12 among 600 CIFAR-10 images,
none before mirrors were searched shifted, and no other pair there.
"""

from __future__ import annotations

import numpy as np
import torch

#: Pixels an image may be shifted each way (the border cut from both images before comparing them).
REACH = 2
#: The side of the small picture the candidates are found by.
GRID = 7
#: Images with a side shorter than this have too little interior to shift (scikit-learn's digits: 8 x 8).
MIN_SIDE = 16
#: Bytes of images converted to float32 at a time, per side (1,365 of CIFAR-10's; 27 of 224 x 224). The
#: check holds ~5 such blocks beside the plain search's features, less than that search held with its
#: normalised copy of them, so `harness.search_memory`'s peak is not raised (a float copy of every image is).
CHECK_BYTES = 16 * 2**20

#: (a, b, least shifted distance, whether a's mirror is b's copy) for every candidate pair within the radius
ShiftHits = list[tuple[int, int, float, bool]]


def searches_shifts(x: torch.Tensor) -> bool:
    """Whether the near search also looks for shifted copies: images (N, C, H, W) or (N, H, W) of
    pixels (uint8 or float) with both sides at least `MIN_SIDE`."""
    return (x.dim() in (3, 4) and min(x.shape[-2:]) >= MIN_SIDE
            and (x.dtype.is_floating_point or x.dtype == torch.uint8))


def shifted_within(images: np.ndarray, keep: np.ndarray, radius: float, k: int) -> ShiftHits:
    """Pairs (a < b, both from `keep`) among the training `images` (N, C, H, W) whose interiors
    correlate within `radius` at some shift of up to `REACH` pixels, among each one's k nearest by the
    small picture; then each one's mirror against the images the same way (never against itself)."""
    small = _small(images, keep)
    hits: ShiftHits = []
    for mirrored in (False, True):
        queries = _small(_oriented(images, mirrored), keep) if mirrored else small
        neighbour = _nearest(queries, small, min(k + 1, len(keep)))
        a = np.repeat(np.arange(len(keep)), neighbour.shape[1])
        b = neighbour.reshape(-1)
        a, b = a[a != b], b[a != b]
        pairs = keep[np.unique(np.stack([np.minimum(a, b), np.maximum(a, b)], axis=1), axis=0)]  # keep ascends
        found = _least_distance(images, pairs[:, 0], _oriented(images, mirrored), pairs[:, 1])
        hits += [(int(pairs[i, 0]), int(pairs[i, 1]), float(found[i]), mirrored)
                 for i in np.flatnonzero(found <= radius)]
    return hits


def shifted_across(queries: np.ndarray, images: np.ndarray, keep: np.ndarray, radius: float, k: int) -> ShiftHits:
    """(query, training index, distance, mirrored): the `queries` (M, C, H, W; a test split) with a
    training image from `keep` within `radius` at some shift, among each query's k nearest by the small
    picture, and among its mirror's."""
    samples = _small(images, keep)
    hits: ShiftHits = []
    for mirrored in (False, True):
        moved = _oriented(queries, mirrored)
        neighbour = _nearest(_small(moved, np.arange(len(queries))), samples, min(k, len(keep)))
        q = np.repeat(np.arange(len(queries)), neighbour.shape[1])
        t = keep[neighbour.reshape(-1)]
        found = _least_distance(moved, q, images, t)
        hits += [(int(q[i]), int(t[i]), float(found[i]), mirrored) for i in np.flatnonzero(found <= radius)]
    return hits


def _oriented(images: np.ndarray, mirrored: bool) -> np.ndarray:
    """`images`, or their left-right mirrors (a view). A mirror's interior is the interior's mirror and
    the shifts are symmetric, so a mirror's distance to b is a's to b's mirror: either may be flipped."""
    return images[..., ::-1] if mirrored else images


def check_rows(images: np.ndarray) -> int:
    """Images converted at a time: `CHECK_BYTES` of them as float32, at least one."""
    return max(1, CHECK_BYTES // (4 * int(np.prod(images.shape[1:]))))


def _small(images: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Each indexed image's interior averaged to `GRID` x `GRID` per channel, centred per channel, unit
    norm; a block of `check_rows` at a time (a float copy of every image would double the memory held)."""
    parts = []
    for start in range(0, len(index), check_rows(images)):
        block = images[index[start:start + check_rows(images)]][..., REACH:-REACH, REACH:-REACH]
        inner = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))
        parts.append(torch.nn.functional.adaptive_avg_pool2d(inner, GRID).reshape(len(block), block.shape[1], -1))
    return _unit(torch.cat(parts).numpy()) if parts else np.zeros((0, images.shape[1] * GRID * GRID), np.float32)


def _unit(values: np.ndarray) -> np.ndarray:
    """(N, C, V) -> (N, C * V): each channel centred on its own, each row scaled to unit norm (a
    constant row stays 0: it correlates with nothing)."""
    values = values - values.mean(axis=2, keepdims=True)
    flat = values.reshape(len(values), -1)
    norm = np.linalg.norm(flat, axis=1, keepdims=True)
    return np.divide(flat, norm, out=np.zeros_like(flat), where=norm > 0)


def _nearest(queries: np.ndarray, samples: np.ndarray, count: int) -> np.ndarray:
    """The `count` nearest samples of each query by cosine distance (scikit-learn's brute force)."""
    from sklearn.neighbors import NearestNeighbors

    return np.asarray(NearestNeighbors(n_neighbors=count, metric="cosine").fit(samples).kneighbors(queries)[1])


def _least_distance(left: np.ndarray, i: np.ndarray, right: np.ndarray, j: np.ndarray) -> np.ndarray:
    """For each pair (left[i], right[j]): the least 1 - correlation (each channel centred on its own)
    of one image's interior with the other's moved by up to `REACH` pixels each way, either image moved.
    Each window is centred before the products (`_centred`): the sums of values and of their squares
    cancel to float32 rounding where a window is flat, and two images flat in the middle (a plain
    background in a noisy frame) then "correlated" at 1 - 1e-9 where they have no correlation at all."""
    least = np.full(len(i), np.inf, dtype=np.float32)
    step = check_rows(left)
    for start in range(0, len(i), step):
        a, b = _floats(left[i[start:start + step]]), _floats(right[j[start:start + step]])
        for moved, fixed in ((a, b), (b, a)):
            still = _centred(_interior(fixed, 0, 0))
            still_norm = np.sqrt(np.einsum("ncij,ncij->n", still, still))
            for dy in range(-REACH, REACH + 1):
                for dx in range(-REACH, REACH + 1):
                    distance = _distance(still, still_norm, _centred(_interior(moved, dy, dx)))
                    np.minimum(least[start:start + step], distance, out=least[start:start + step])
    return np.maximum(least, 0.0)


def _floats(images: np.ndarray) -> np.ndarray:
    """float32 images with each channel's mean taken out, so that a window's own mean, taken out next,
    is small beside its values (a flat image far from 0 keeps its spread to float32's resolution)."""
    values = images.astype(np.float32)
    values -= values.mean(axis=(2, 3), keepdims=True)
    return values


def _interior(images: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """The interior moved by (dy, dx) pixels: (N, C, H - 2 REACH, W - 2 REACH), a view."""
    h, w = images.shape[-2:]
    return images[..., REACH + dy:h - REACH + dy, REACH + dx:w - REACH + dx]


def _centred(window: np.ndarray) -> np.ndarray:
    """A copy of `window` with each image's channel centred on its own mean, summed in float64: the sum
    of a flat window's values is then exact, its mean is its value, and it centres to exactly 0."""
    return window - window.mean(axis=(2, 3), dtype=np.float64, keepdims=True).astype(np.float32)


def _distance(still: np.ndarray, still_norm: np.ndarray, window: np.ndarray) -> np.ndarray:
    """1 - correlation of the centred windows `still` (its norm `still_norm`) and `window`, over all
    channels together; 1 where either is flat (a correlation with nothing)."""
    norm = still_norm * np.sqrt(np.einsum("ncij,ncij->n", window, window))
    dot = np.einsum("ncij,ncij->n", still, window)
    return np.where(norm > 0, 1 - dot / np.where(norm > 0, norm, 1.0), 1.0)
