"""PIL images to uint8 pixels: one rule for `imagefolder:` and `hf:`, so the same files give the same
arrays through either loader.

The harness trains on 8-bit images. PIL's `convert("RGB")` clips wider values to 0..255, so a 16-bit
gray ("I;16"), 32-bit ("I") or float ("F") image silently became a constant image: such modes are
refused, naming the image and saying to convert it to 8-bit first.

Gray images (modes "1", "L", "LA", and palette images whose palette holds only grays) decode to one
channel, colour images to RGB; alpha is dropped, as `convert("RGB")` always did. A split is gray
(1 channel) when every image in it is gray, else RGB, its gray images replicated to three channels,
which is exactly what `convert("RGB")` gives them.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np

from harness.errors import HarnessError

#: Modes gray whatever their pixels; palette modes are gray when their palette is.
_GRAY_MODES = ("1", "L", "LA")
_PALETTE_MODES = ("P", "PA")


def check_depth(mode: str, where: str) -> None:
    """Refuse a mode whose values do not fit 8 bits: `convert` would clip them to a constant image."""
    from PIL import ImageMode

    try:
        eight_bit = ImageMode.getmode(mode).typestr in ("|u1", "|b1")
    except KeyError:  # a mode PIL cannot describe cannot be converted faithfully either
        eight_bit = False
    if not eight_bit:
        raise HarnessError(
            f"{where} has mode {mode!r}, whose values do not fit 8 bits (16-bit, 32-bit or float pixels); the "
            f"harness trains on 8-bit images: convert the images to 8-bit first (rescale to 0..255, e.g. "
            f"Image.fromarray((a * 255.0 / a.max()).astype(np.uint8)) for an array a of the pixels)"
        )


def is_gray(image: Any) -> bool:
    """A gray mode, or a palette of grays only (reading the palette decodes a palette image)."""
    if image.mode in _GRAY_MODES:
        return True
    if image.mode in _PALETTE_MODES:
        palette = np.asarray(image.getpalette("RGB") or [], dtype=np.uint8).reshape(-1, 3)
        return bool((palette == palette[:, :1]).all())
    return False


def to_pixels(image: Any, where: str) -> np.ndarray:
    """uint8 (H, W) for a gray image, (H, W, 3) for a colour one; `where` names it in errors."""
    check_depth(image.mode, where)
    return np.asarray(image.convert("L" if is_gray(image) else "RGB"), dtype=np.uint8)


def decode_row(value: dict[str, Any] | None, mode: str | None, where: str) -> np.ndarray:
    """`to_pixels` of one stored image, a `datasets.Image(decode=False)` row ({"bytes", "path"}), opened with
    PIL as `imagefolder:` opens a file. Not `datasets`' own decode, which turns EXIF-oriented photos upright:
    the same files gave other pixels (and sizes) through `hf:` than through `imagefolder:`. `mode`: the
    feature's `Image(mode=...)`; `where` names the row in errors (an undecodable row was not named)."""
    from PIL import Image

    if value is None or (value.get("bytes") is None and value.get("path") is None):
        raise HarnessError(f"{where} is missing; drop such rows")
    try:
        with Image.open(io.BytesIO(value["bytes"]) if value["bytes"] is not None else value["path"]) as image:
            return to_pixels(image.convert(mode) if mode else image, where)
    except (OSError, ValueError) as exc:  # PIL: unidentified or truncated bytes; a path that is gone
        raise HarnessError(f"{where} cannot be decoded ({exc}); drop or replace that row") from exc
    except Image.DecompressionBombError as exc:  # no OSError: a header claiming > ~179 M pixels was a traceback
        raise HarnessError(f"{where} cannot be decoded: its header claims more pixels than PIL decodes safely "
                           f"({exc}); drop that row, or resize the image if it is a real photo") from exc


def stack(arrays: Sequence[np.ndarray]) -> np.ndarray:
    """(N, C, H, W) from same-size `to_pixels` arrays: 1 channel when all are gray, else RGB."""
    if all(a.ndim == 2 for a in arrays):
        return np.stack(arrays)[:, None, :, :]
    rgb = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    return np.ascontiguousarray(np.stack(rgb).transpose(0, 3, 1, 2))


def widen(x: np.ndarray) -> np.ndarray:
    """(N, 1, H, W) gray to (N, 3, H, W) RGB, as `convert("RGB")` does; RGB stays as is."""
    return np.repeat(x, 3, axis=1) if x.shape[1] == 1 else x


def match_splits(name: str, x: np.ndarray, x_test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A gray split beside an RGB one becomes RGB (`hf:`); test images of another size are an error."""
    if x.shape[2:] != x_test.shape[2:]:
        raise HarnessError(f"{name}: test images are {x_test.shape[2]}x{x_test.shape[3]} but training images "
                           f"are {x.shape[2]}x{x.shape[3]}; resize them to one size")
    return widen(x), widen(x_test)
