"""`drop_bad_thread_counts` unsets exactly the OMP_NUM_THREADS values libgomp rejects (attsh30). A regex of
positive whole numbers unset `+4` (libgomp reads it as 4) with a line saying it was ignored, and kept
`99999999999999999999` (past a C long: libgomp printed 'Invalid value' twice, the line this check exists to
replace). The real libgomp torch bundles is asked, value by value, in a fresh process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.console import drop_bad_thread_counts, thread_count_read

LIBGOMP = Path(torch.__file__).parent / "lib" / "libgomp.so.1"
VALUES = ["+4", "4,+2", " +4 ", "+04", "99999999999999999999", "9223372036854775808", "9223372036854775807",
          "4,9223372036854775808", "4, 2", "\t4\n", "4\x0b", "garbage", "", "0", "00", "-1", "+0", "+ 4", "++4",
          "4,", "4,,2", "1e3", "0x4", "\u00a04", "\u0663", "1 2", "4,-2", "04"]


def _libgomp_accepts(value: str) -> bool:
    code = f"import ctypes; ctypes.CDLL({str(LIBGOMP)!r}).omp_get_max_threads()"
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ, "OMP_NUM_THREADS": value},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return "libgomp: Invalid value" not in done.stderr


@pytest.mark.parametrize("value, kept", [("+4", True), ("4,+2", True), ("99999999999999999999", False),
                                         ("9223372036854775808", False), ("9223372036854775807", True),
                                         ("4,9223372036854775808", False), ("+0", False), ("+ 4", False)])
def test_what_libgomp_reads_is_kept_and_what_it_rejects_is_unset(value: str, kept: bool, monkeypatch,
                                                                  capsys) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", value)
    drop_bad_thread_counts()
    assert ("OMP_NUM_THREADS" in os.environ) is kept
    assert os.environ.get("OMP_NUM_THREADS", value) == value
    assert capsys.readouterr().err.count("is not a positive whole number") == (0 if kept else 1)


@pytest.mark.skipif(not LIBGOMP.is_file(), reason="torch bundles no libgomp here")
def test_every_value_agrees_with_the_real_libgomp() -> None:
    wrong = {value: accepts for value in VALUES
             if (accepts := _libgomp_accepts(value)) != thread_count_read("OMP_NUM_THREADS", value)}
    assert wrong == {}  # value -> whether libgomp took it, where memprox decided otherwise


def test_mkl_counts_past_a_c_int_are_unset() -> None:
    """MKL wraps 4294967297 to 1 thread and ignores 2147483648; 2147483647 it reads as written."""
    assert [thread_count_read("MKL_NUM_THREADS", v) for v in ("2147483647", "2147483648", "4294967297")] == [
        True, False, False]
