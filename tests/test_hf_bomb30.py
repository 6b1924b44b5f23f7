"""An `hf:` image row whose header claims more pixels than PIL decodes safely is named, not a traceback."""

from __future__ import annotations

import io
import struct
import zlib

import pytest

from harness.datasets.pixels import decode_row
from harness.errors import HarnessError


def _png_header(width: int, height: int) -> bytes:
    """A real 1x1 PNG whose IHDR is rewritten to claim width x height (PIL checks the size on open)."""
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (1, 1)).save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = ihdr[4:12]
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr))
    return bytes(data)


def test_a_decompression_bomb_row_is_named_with_the_way_out() -> None:
    row = {"bytes": _png_header(20000, 20000), "path": None}
    with pytest.raises(HarnessError, match=r"row 7 cannot be decoded: its header claims more pixels.*drop that row"):
        decode_row(row, None, "row 7")


def test_an_ordinary_bad_row_keeps_its_message() -> None:
    with pytest.raises(HarnessError, match=r"row 3 cannot be decoded \(.*\); drop or replace that row"):
        decode_row({"bytes": io.BytesIO(b"not an image").getvalue(), "path": None}, None, "row 3")
