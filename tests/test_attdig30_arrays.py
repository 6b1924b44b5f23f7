"""attdig30: an array the code digest reads by value is hashed where its bytes lie. `tobytes()` copied it at every
digest (a planner digests the model once per setting or more): a 40 MB module array took 40 MB more at each. Pinned:
the text is the SHA-256 of `tobytes()` for every layout and dtype, so no digest changed."""

from __future__ import annotations

import hashlib
import tracemalloc

import numpy as np
import pytest
import torch

from harness.code_digest_values import _array

ARRAYS = {
    "C order": np.arange(12.0).reshape(3, 4),
    "Fortran order": np.asfortranarray(np.arange(12.0).reshape(3, 4)),
    "a strided slice": np.arange(20)[::3],
    "a transpose": np.arange(6).reshape(2, 3).T,
    "0-d": np.array(5),
    "a numpy scalar": np.float32(3.0),
    "empty": np.zeros((0, 3)),
    "structured": np.array([("a", 1)], dtype=[("x", "U2"), ("y", "i4")]),
    "datetime": np.array(["2020-01-01"], dtype="M8[D]"),
    "big-endian": np.arange(6, dtype=">i4"),
    "text of width 0": np.array([], dtype="U0"),
    "masked": np.ma.array([1, 2, 3], mask=[0, 1, 0]),
}


@pytest.mark.parametrize("case", list(ARRAYS))
def test_an_array_s_text_is_the_hash_of_its_tobytes(case) -> None:
    a = ARRAYS[case]
    assert _array(a) == f"array({a.dtype}, {tuple(a.shape)}, {hashlib.sha256(a.tobytes()).hexdigest()})"


@pytest.mark.parametrize("t", [torch.arange(6.0).reshape(2, 3).T, torch.ones(3, dtype=torch.bfloat16),
                               torch.tensor(2.0), torch.zeros(0)], ids=["transpose", "bf16", "0-d", "empty"])
def test_a_tensor_s_text_is_the_hash_of_its_bytes(t) -> None:
    raw = t.contiguous().reshape(-1).view(dtype=torch.uint8).numpy().tobytes()
    assert _array(t) == f"array({t.dtype}, {tuple(t.shape)}, {hashlib.sha256(raw).hexdigest()})"


def test_a_big_array_is_hashed_without_a_copy(tmp_path) -> None:
    big = np.ones(5_000_000)  # 40 MB
    path = tmp_path / "big.npy"
    np.save(path, big)
    for a in (big, np.load(path, mmap_mode="r")):
        tracemalloc.start()
        try:
            _array(a)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 4_000_000  # 4048737: 40 MB more
